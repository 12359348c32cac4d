# syntax=docker/dockerfile:1
# soundhive images: one target per service, the same code and command line in each.
#
#   docker build --target api .                 # CPU image (YAMNet with LiteRT, no TensorFlow)
#   docker build --target features-gpu .        # TensorFlow with CUDA: VGGish, trained heads
#
# Targets: capture, features, classifier, notifier, api (CPU) and features-gpu, classifier-gpu.
# Every target runs `soundhive serve SERVICE` as user 10001 through deploy/docker/entrypoint.sh
# (model pull into the /models volume when missing; SOUNDHIVE_CAPTURE_SOURCES for capture) and
# checks its own /healthz. No secret is baked in: credentials come from the environment or
# *_FILE secrets at run time.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: compile PyAudio, install soundhive and its dependencies into /opt/venv ----------
FROM ${PYTHON_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential portaudio19-dev \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared shared
COPY services services
COPY soundhive soundhive
# Editable: the code stays in /app with its data files (the api's static dashboard), and the
# runtime stage copies /app and /opt/venv to the same paths.
RUN pip install --no-cache-dir -e ".[mic]" \
 && python -c "import services.api.app, services.features.service, soundhive.cli"

# ---- build-gpu: the same plus TensorFlow with its CUDA libraries (pip wheels) ----------------
FROM build AS build-gpu
RUN pip install --no-cache-dir "tensorflow[and-cuda]>=2.16,<2.22"

# ---- runtime: what every CPU image shares --------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# PortAudio and ALSA for microphones (libsndfile and FFmpeg come inside the soundfile and av
# wheels).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libportaudio2 libasound2 libasound2-plugins \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 soundhive \
 && useradd --system --uid 10001 --gid soundhive --groups audio --create-home \
      --home-dir /home/soundhive soundhive \
 && mkdir -p /models \
 && chown soundhive:soundhive /models
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
COPY deploy/docker/entrypoint.sh /usr/local/bin/soundhive-entrypoint
COPY deploy/docker/healthcheck.py /usr/local/lib/soundhive/healthcheck.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SOUNDHIVE_MODELS=/models \
    SOUNDHIVE_METRICS_HOST=0.0.0.0 \
    SOUNDHIVE_API_HOST=0.0.0.0
WORKDIR /home/soundhive
USER 10001:10001
VOLUME ["/models"]
ENTRYPOINT ["soundhive-entrypoint"]

# ---- one target per service ----------------------------------------------------------------
FROM runtime AS capture
ENV SOUNDHIVE_SERVICE=capture
EXPOSE 9101
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "/usr/local/lib/soundhive/healthcheck.py"]
CMD ["soundhive", "serve", "capture"]

FROM runtime AS features
ENV SOUNDHIVE_SERVICE=features
EXPOSE 9102
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/usr/local/lib/soundhive/healthcheck.py"]
CMD ["soundhive", "serve", "features"]

FROM runtime AS classifier
ENV SOUNDHIVE_SERVICE=classifier
EXPOSE 9103
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/usr/local/lib/soundhive/healthcheck.py"]
CMD ["soundhive", "serve", "classifier"]

FROM runtime AS notifier
ENV SOUNDHIVE_SERVICE=notifier
EXPOSE 9104
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "/usr/local/lib/soundhive/healthcheck.py"]
CMD ["soundhive", "serve", "notifier"]

FROM runtime AS recorder
ENV SOUNDHIVE_SERVICE=recorder
EXPOSE 9105
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "/usr/local/lib/soundhive/healthcheck.py"]
CMD ["soundhive", "serve", "recorder"]

FROM runtime AS api
ENV SOUNDHIVE_SERVICE=api
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "/usr/local/lib/soundhive/healthcheck.py"]
CMD ["soundhive", "serve", "api"]

# ---- GPU variants: TensorFlow with CUDA for VGGish and trained heads -----------------------
# Run with an NVIDIA runtime (compose profile `gpu`, or nvidia.com/gpu on Kubernetes). YAMNet
# itself runs on LiteRT's CPU kernels either way.
FROM runtime AS runtime-gpu
COPY --from=build-gpu /opt/venv /opt/venv

FROM runtime-gpu AS features-gpu
ENV SOUNDHIVE_SERVICE=features
EXPOSE 9102
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "/usr/local/lib/soundhive/healthcheck.py"]
CMD ["soundhive", "serve", "features"]

FROM runtime-gpu AS classifier-gpu
ENV SOUNDHIVE_SERVICE=classifier
EXPOSE 9103
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "/usr/local/lib/soundhive/healthcheck.py"]
CMD ["soundhive", "serve", "classifier"]
