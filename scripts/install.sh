#!/usr/bin/env bash
# Install soundhive on Debian/Ubuntu: the system packages it needs (only those missing), then a
# virtualenv in .venv with the project and its Python dependencies, and `soundhive` on the PATH.
# Re-running it is cheap: nothing already installed is installed again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
    build-essential    # compiles PyAudio (the mic extra: microphones)
    portaudio19-dev    # PyAudio's headers and library
    libsndfile1        # WAV/FLAC/Ogg/MP3 decoding
    ffmpeg             # network streams and other formats
    redis-server       # the message bus (tests start their own)
    alsa-utils libasound2-plugins  # ALSA devices, including the file PCM used in tests
    espeak-ng sox      # speech and test signals for tests
    docker-compose     # `docker-compose config` validates docker-compose.yml in tests
    chromium           # the dashboard's browser test (driven by playwright, no browser download)
    mosquitto          # the notifier's MQTT tests (they start their own)
    openssl            # a self-signed certificate for the capture hub's HTTPS test
    prometheus         # promtool checks the alert rules in tests (the server is not used)
    openttd-opensfx asterisk-core-sounds-en-wav  # recordings for bench/events_accuracy.py
)
PYTHON="${PYTHON:-python3}"

apt_install() {
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing system packages: $*"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

missing=()
for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
command -v "$PYTHON" >/dev/null || missing+=(python3)
"$PYTHON" -c "import venv, ensurepip" 2>/dev/null || missing+=(python3-venv)
"$PYTHON" -c "import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" 2>/dev/null \
    || missing+=(python3-dev)
if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
fi

"$PYTHON" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 13)))' || {
    echo "error: soundhive needs Python 3.11 or 3.12 (set PYTHON=/path/to/python3.11)" >&2
    exit 2
}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade "pip>=24"
.venv/bin/python -m pip install --quiet -e ".[dev,mic,tensorflow,bench]"

# Put `soundhive` on the PATH: system-wide for root, else in ~/.local/bin.
if [ "$(id -u)" -eq 0 ]; then bin_dir=/usr/local/bin; else bin_dir="$HOME/.local/bin"; fi
mkdir -p "$bin_dir"
ln -sf "$PWD/.venv/bin/soundhive" "$bin_dir/soundhive"
case ":$PATH:" in
    *":$bin_dir:"*) ;;
    *) echo "note: add $bin_dir to your PATH to run soundhive (or use .venv/bin/soundhive)" ;;
esac
echo "soundhive installed: $(.venv/bin/soundhive --version)"
