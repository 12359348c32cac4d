"""Audio sources: microphones (PyAudio, the `mic` extra), files and folders, network streams (PyAV).

`--source` forms (repeatable), each optionally NAME=FORM:
    mic               the default input device       mic:2 / mic:USB   by index / name part
    file:PATH         a file, or every audio file under a folder (one source per file)
    url:URL           anything FFmpeg opens (http://, https://, rtsp://, rtmp://, ... also
                      accepted without the `url:` prefix)
A source's id (its name on the dashboard, in metrics, events and every sink) is its NAME
(NAME/FILE for a folder's files), else mic:DEVICE, the file's name (its path under a folder),
or the URL without its secrets (shared/redact.py). The real URL only opens the stream: every
message that names it shows it redacted.
Each source yields float32 mono 16 kHz blocks until it ends (a file, or a network stream that
ends) or fails. A failure is SourceError (transient: the capture service retries the source with
backoff; an unplugged device, an unreachable server) or SourceGone (permanent: a file that is
missing, empty, truncated or not audio, a stream without audio; reported once as failed).
Microphones and network streams are live: they cannot wait for the pipeline.
These are the thread path's readers (a thread per source); most HTTP(S) streams are read by
the capture hub instead (services/capture/hub.py), with the same Downmix.
"""

import errno
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import soxr

from shared import params
from shared.audio import AudioError, find_audio_files, stream_audio
from shared.errors import UserError, one_line
from shared.redact import redact

BLOCK_SAMPLES = params.SAMPLE_RATE // 10  # 0.1 s
URL_SCHEMES = ("http://", "https://", "rtsp://", "rtsps://", "rtmp://", "rtp://", "udp://",
               "tcp://", "srt://")
NETWORK_TIMEOUT_S = 10.0
NAME_MAX = 64
SOURCE_FORMS = (
    "[NAME=]mic[:DEVICE], [NAME=]file:PATH (a file or folder) or [NAME=]url:URL (anything FFmpeg "
    f"opens). NAME (up to {NAME_MAX} printable characters, no spaces or '=') is the source's id "
    "on the dashboard, in metrics and in events; without one, a URL's id is the URL without "
    "user:password@ and with secret parameters (token, key, password, sig...) masked.")


class SourceError(UserError):
    """A source that cannot run now; the message is one line."""


class SourceGone(SourceError):
    """A source that can never run; the message is one line."""


@dataclass(frozen=True)
class SourceSpec:
    id: str
    kind: str  # "mic" | "file" | "url"
    target: str = field(repr=False)  # device index or name ("" = default), file path, or URL

    @property
    def live(self) -> bool:
        """Audio that happens now (a microphone, a network stream), rather than a file."""
        return self.kind != "file"

    def blocks(self) -> Iterator[np.ndarray]:
        if self.kind == "file":
            return _file_blocks(Path(self.target))
        if self.kind == "url":
            return _url_blocks(self.target)
        return _mic_blocks(self.target)


def parse_sources(texts: list[str]) -> list[SourceSpec]:
    """--source values -> specs; a malformed one raises SourceError naming it."""
    specs = [spec for text in texts for spec in _parse(text)]
    seen: set[str] = set()
    for spec in specs:
        if spec.id in seen:
            raise SourceError(f"two sources are both named {spec.id!r}: give them names "
                              "(NAME=file:..., NAME=url:...)")
        seen.add(spec.id)
    return specs


def _parse(text: str) -> list[SourceSpec]:
    name, form = _split_name(text)
    specs = _parse_form(form)
    if name is None:
        return specs
    if len(specs) == 1:
        return [replace(specs[0], id=name)]
    return [replace(spec, id=f"{name}/{spec.id}") for spec in specs]


def _split_name(text: str) -> tuple[str | None, str]:
    """NAME=FORM -> (NAME, FORM); a text that starts with a form has no name (its '=' belong to
    a path or a URL's query)."""
    if _starts_with_form(text) or "=" not in text:
        return None, text
    name, form = text.split("=", 1)
    if not (0 < len(name) <= NAME_MAX and name.isprintable() and not any(
            c.isspace() for c in name)):
        raise SourceError(f"bad --source {redact(text)!r}: a NAME has 1 to {NAME_MAX} "
                          "printable characters, no spaces or '='")
    if not _starts_with_form(form):
        raise SourceError(f"bad --source {redact(text)!r}: after {name}= comes "
                          "mic[:DEVICE], file:PATH or url:URL")
    return name, form


def _starts_with_form(text: str) -> bool:
    return text == "mic" or text.startswith(("mic:", "file:", "url:", *URL_SCHEMES))


def _parse_form(text: str) -> list[SourceSpec]:
    if text == "mic" or text.startswith("mic:"):
        device = text[4:]
        return [SourceSpec(f"mic:{device or 'default'}", "mic", device)]
    if text.startswith("url:") or text.startswith(URL_SCHEMES):
        url = text.removeprefix("url:")
        if not url.startswith(URL_SCHEMES):
            raise SourceError(f"bad --source {redact(text)!r}: a URL starts with one of "
                              + ", ".join(URL_SCHEMES))
        return [SourceSpec(redact(url), "url", url)]
    if text.startswith("file:"):
        path = Path(text[5:]).expanduser()
        if not text[5:]:
            raise SourceError(f"bad --source {text!r}: file: needs a path")
        if path.is_dir():
            files = find_audio_files(path)
            if not files:
                raise SourceError(f"bad --source {text!r}: no audio files in {path}")
            return [SourceSpec(str(f.relative_to(path)), "file", str(f)) for f in files]
        return [SourceSpec(path.name, "file", str(path))]
    raise SourceError(f"bad --source {redact(text)!r}: use [NAME=]mic[:DEVICE], file:PATH or "
                      "url:URL")


def _file_blocks(path: Path) -> Iterator[np.ndarray]:
    try:
        yield from stream_audio(path, BLOCK_SAMPLES / params.SAMPLE_RATE)
    except AudioError as exc:
        raise SourceGone(str(exc)) from None


def _url_blocks(url: str) -> Iterator[np.ndarray]:
    import av

    shown = redact(url)
    try:
        container = av.open(url, timeout=NETWORK_TIMEOUT_S)
    except (av.FFmpegError, OSError) as exc:
        raise SourceError(f"cannot open {shown}: {_without_url(exc)}") from None
    with container:
        if not container.streams.audio:
            raise SourceGone(f"{shown}: no audio stream")
        downmix = Downmix()
        # Codec frames are short (an MP3's: 26 ms); yielded one by one, each woke the source's
        # real-time pacing and chunker: most of capture's CPU with many streams. They are
        # downmixed 0.1 s at a time too (see Downmix).
        pending: list[np.ndarray] = []
        held = 0
        pushed_s = 0.0
        try:
            for frame in container.decode(container.streams.audio[0]):
                downmix.push(frame)
                pushed_s += frame.samples / frame.sample_rate
                if pushed_s < BLOCK_SAMPLES / params.SAMPLE_RATE:
                    continue
                for samples in downmix.pull():
                    pending.append(samples)
                    held += len(samples)
                pushed_s = 0.0
                if held >= BLOCK_SAMPLES:
                    yield np.concatenate(pending)
                    pending, held = [], 0
            pending += downmix.pull()
            failure = None
        except (av.FFmpegError, OSError) as exc:
            failure = SourceError(f"{shown}: {_without_url(exc)}")
            pending += downmix.pull()
        if pending:  # the audio received before the end or the failure
            yield np.concatenate(pending)
        if failure is not None:
            raise failure


class Downmix:
    """Decoded audio frames -> float32 mono 16 kHz samples: the FFmpeg filter graph that
    av.AudioResampler(format="flt", layout="mono", rate=16000) builds (abuffer -> aformat ->
    abuffersink, FFmpeg inserting its aresample), so the same samples, but in a graph of one
    thread: AudioResampler's graph starts a thread pool of one thread per core for each stream,
    idle for these filters (1,000 streams on 16 cores: 16,000 threads).
    Frames may be pushed several at a time before a pull: the same samples, and a quarter less
    CPU at four MP3 frames a pull (each pull ends with an EAGAIN, an exception in PyAV)."""

    def __init__(self) -> None:
        self._graph: Any = None  # av.filter.Graph, built for the frames' format
        self._format: tuple[int, str, str] | None = None
        self._done: list[np.ndarray] = []  # an old graph's last samples, not yet pulled

    def samples(self, frame: Any) -> list[np.ndarray]:
        """The samples `frame` completes (FFmpeg's resampler holds a few back)."""
        self.push(frame)
        return self.pull()

    def push(self, frame: Any) -> None:
        frame_format = (frame.sample_rate, frame.format.name, frame.layout.name)
        if frame_format != self._format:
            if self._graph is not None:
                # A stream whose format changes (a radio's next programme) gets a new graph;
                # the old one first gives up the samples its resampler held back.
                self._graph.push(None)
                self._done = self.pull()  # with what it already held
            self._graph, self._format = _downmix_graph(frame), frame_format
        self._graph.push(frame)

    def pull(self) -> list[np.ndarray]:
        """The samples the frames pushed so far complete."""
        import av

        out, self._done = self._done, []
        if self._graph is None:
            return out
        while True:
            try:
                done = self._graph.pull()
            except EOFError:
                return out
            except av.FFmpegError as exc:
                if exc.errno != errno.EAGAIN:
                    raise
                return out
            # The frame's own buffer: to_ndarray() goes through Python-level plane handling,
            # a fifth of this loop's CPU.
            out.append(np.frombuffer(done.planes[0], np.float32, done.samples))


def _downmix_graph(frame: Any) -> Any:
    import av.filter

    graph = av.filter.Graph()
    graph.threads = 1
    time_base = {"time_base": str(frame.time_base)} if frame.time_base is not None else {}
    source = graph.add("abuffer", sample_rate=str(frame.sample_rate),
                       sample_fmt=frame.format.name, channel_layout=frame.layout.name, **time_base)
    target = graph.add("aformat", sample_rates=str(params.SAMPLE_RATE), sample_fmts="flt",
                       channel_layouts="mono")
    sink = graph.add("abuffersink")
    source.link_to(target)
    target.link_to(sink)
    graph.configure()
    return graph


def _without_url(exc: Exception) -> str:
    """What went wrong, without the URL PyAV appends to its messages (with its password)."""
    return redact(getattr(exc, "strerror", None) or one_line(exc))


MIC_EXTRA = ("microphones need the mic extra, which this installation lacks: "
             "pip install 'soundhive[mic]' (./scripts/install.sh installs it)")


def _pyaudio() -> ModuleType:
    """PyAudio, the `mic` extra; without it a SourceGone saying how to get it."""
    try:
        import pyaudio
    except ImportError:
        raise SourceGone(MIC_EXTRA) from None
    return pyaudio


def list_devices() -> list[dict]:
    """Input devices PyAudio sees: index, name, channels, default sample rate."""
    pa = _pyaudio().PyAudio()
    try:
        devices = [pa.get_device_info_by_index(i) for i in range(pa.get_device_count())]
    finally:
        pa.terminate()
    return [
        {"index": int(d["index"]), "name": str(d["name"]),
         "channels": int(d["maxInputChannels"]), "rate": int(d["defaultSampleRate"])}
        for d in devices if int(d["maxInputChannels"]) > 0
    ]


def _find_device(device: str) -> dict:
    devices = list_devices()
    if not devices:
        raise SourceError("no audio input device (see `soundhive devices`)")
    if device == "":
        return devices[0] if len(devices) == 1 else _default_device(devices)
    if device.isdigit():
        match = [d for d in devices if d["index"] == int(device)]
    else:
        match = [d for d in devices if device.lower() in d["name"].lower()]
    if not match:
        raise SourceError(f"no input device {device!r} (see `soundhive devices`)")
    return match[0]


def _default_device(devices: list[dict]) -> dict:
    pa = _pyaudio().PyAudio()
    try:
        index = int(pa.get_default_input_device_info()["index"])
    except OSError:
        return devices[0]
    finally:
        pa.terminate()
    return next((d for d in devices if d["index"] == index), devices[0])


def _mic_blocks(device: str) -> Iterator[np.ndarray]:
    pyaudio = _pyaudio()
    info = _find_device(device)
    pa = pyaudio.PyAudio()
    rate = params.SAMPLE_RATE
    try:
        try:
            pa.is_format_supported(rate, input_device=info["index"], input_channels=1,
                                   input_format=pyaudio.paFloat32)
        except ValueError:
            rate = info["rate"]
        frames = rate // 10
        try:
            stream = pa.open(rate=rate, channels=1, format=pyaudio.paFloat32, input=True,
                             input_device_index=info["index"], frames_per_buffer=frames)
        except OSError as exc:
            raise SourceError(f"cannot open input device {info['name']!r}: {exc}") from None
        resampler = (soxr.ResampleStream(rate, params.SAMPLE_RATE, 1, dtype="float32")
                     if rate != params.SAMPLE_RATE else None)
        try:
            while True:
                try:
                    raw = stream.read(frames, exception_on_overflow=False)
                except OSError as exc:
                    raise SourceError(f"input device {info['name']!r}: {exc}") from None
                block = np.frombuffer(raw, np.float32)
                yield resampler.resample_chunk(block) if resampler else block.copy()
        finally:
            stream.close()
    finally:
        pa.terminate()
