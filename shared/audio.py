"""Audio in: decode any file to 16 kHz mono float32, and cut it into model patches."""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import soxr

from shared import params
from shared.errors import UserError, one_line

AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aiff", ".aif"}
    | {".au", ".webm", ".wma", ".mka", ".caf", ".mp4", ".mkv"}
)

# A header's length is exact for WAV and FLAC but only a bitrate estimate for some MP3s (2% off
# is common), so a file counts as cut short when more than a tenth of the declared audio is gone.
COMPLETE_FRACTION = 0.9
_RIFF_PLACEHOLDER_SIZE = 0x7FFF0000
_UNDECLARED_FRAMES = 2**63 - 1  # libsndfile's length for a FLAC that does not declare one
# Samples of all channels in one decoded block: a block's memory stays bounded whatever the
# sample rate and channel count a header claims.
_MAX_BLOCK_VALUES = 1 << 20


class AudioError(UserError):
    """A file that is not usable audio; the message is one line fit for a user."""


class AudioTooLong(AudioError):
    """A file holding more audio than the caller allows (decoding stopped there)."""

    def __init__(self, path: Path, max_seconds: float):
        super().__init__(f"{path}: more than {max_seconds:g} s of audio")
        self.max_seconds = max_seconds


def load_audio(path: str | Path) -> np.ndarray:
    """Decode a file and return it as float32 mono at SAMPLE_RATE in [-1, 1]."""
    samples, sample_rate = decode(path)
    return to_mono_16k(samples, sample_rate)


def decode(path: str | Path) -> tuple[np.ndarray, int]:
    """float32 samples [frames, channels] and the sample rate, via libsndfile, else FFmpeg."""
    path = _existing_file(path)
    try:
        samples, sample_rate = _decode_with_libsndfile(path)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError):
        samples, sample_rate = _decode_with_ffmpeg(path)
    if samples.shape[0] == 0:
        raise AudioError(f"{path}: contains no audio")
    if not np.all(np.isfinite(samples)):
        raise AudioError(f"{path}: contains invalid (NaN or infinite) samples")
    return samples, int(sample_rate)


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")
    return path


def _decode_with_libsndfile(path: Path) -> tuple[np.ndarray, int]:
    with soundfile.SoundFile(path) as f:
        samples = f.read(dtype="float32", always_2d=True)
        declared, header = f.frames, f.extra_info
    if _riff_data_cut_short(header) or len(samples) < declared * COMPLETE_FRACTION:
        raise AudioError(f"{path}: truncated (the file ends before the audio its header declares)")
    return samples, f.samplerate


def _riff_data_cut_short(header: str) -> bool:
    """libsndfile reports a WAV data chunk larger than the file as `data : N (should be M)`;
    streaming writers leave a placeholder size (0 or ~4 GiB) there, which is not truncation."""
    match = re.search(r"^data : (\d+) \(should be (\d+)\)", header, re.MULTILINE)
    if not match:
        return False
    declared, available = int(match[1]), int(match[2])
    return available < declared < _RIFF_PLACEHOLDER_SIZE


@contextmanager
def _ffmpeg_audio(path: Path) -> Iterator[tuple[Any, Iterator[np.ndarray]]]:
    """A file's first audio stream through FFmpeg (PyAV), and its decoded blocks as float32
    [frames, channels]; any FFmpeg error, at opening or while decoding, is an AudioError."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"{path}: no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp")
            yield stream, (out.to_ndarray().T for frame in container.decode(stream)
                           for out in resampler.resample(frame))
    except AudioError:
        raise
    except (av.FFmpegError, ValueError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or one_line(exc)
        raise AudioError(f"{path}: not a readable audio file ({reason})") from None


def _decode_with_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    with _ffmpeg_audio(path) as (stream, blocks):
        decoded = list(blocks)
        sample_rate, declared_seconds = stream.rate, _declared_seconds(stream)
    if not decoded or not sample_rate:
        raise AudioError(f"{path}: contains no audio")
    samples = np.concatenate(decoded).astype(np.float32)
    if declared_seconds and len(samples) / sample_rate < declared_seconds * COMPLETE_FRACTION:
        raise AudioError(f"{path}: truncated (the file ends before the audio its header declares)")
    return samples, sample_rate


def stream_audio(path: str | Path, block_seconds: float = 1.0,
                 max_seconds: float | None = None) -> Iterator[np.ndarray]:
    """Decode a file block by block into float32 mono SAMPLE_RATE blocks, in memory bounded by
    the block size whatever the file's length. Raises AudioError as `decode` does: before the
    first block for a missing, empty or unreadable file, after the last for a truncated one.
    With `max_seconds`, raises AudioTooLong before the first block when the file declares more
    audio, and as soon as the decoded audio passes it (a header may lie)."""
    path = _existing_file(path)
    sound_file = _open_with_libsndfile(path)
    if sound_file is None:
        yield from _stream_with_ffmpeg(path, max_seconds)
        return
    with sound_file:
        if _riff_data_cut_short(sound_file.extra_info):
            raise AudioError(f"{path}: truncated (the file ends before the audio its header "
                             "declares)")
        to_16k = _MonoResampler(path, sound_file.samplerate,
                                sound_file.frames / sound_file.samplerate, max_seconds)
        size = max(1, min(round(block_seconds * sound_file.samplerate),
                          _MAX_BLOCK_VALUES // sound_file.channels))
        try:
            # read, not blocks: blocks pads to the declared length, an estimate for MP3
            while len(block := sound_file.read(size, dtype="float32", always_2d=True)):
                yield from to_16k.push(block)
        except (soundfile.LibsndfileError, RuntimeError) as exc:
            raise AudioError(f"{path}: not a readable audio file ({one_line(exc)})") from None
        yield from to_16k.finish()


def _open_with_libsndfile(path: Path) -> soundfile.SoundFile | None:
    """The file opened by libsndfile, or None where FFmpeg decodes it: a format libsndfile does
    not read, or a FLAC without a declared length (libsndfile would not read it to its end)."""
    try:
        sound_file = soundfile.SoundFile(path)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None
    if sound_file.frames == _UNDECLARED_FRAMES:
        sound_file.close()
        return None
    return sound_file


def _stream_with_ffmpeg(path: Path, max_seconds: float | None) -> Iterator[np.ndarray]:
    with _ffmpeg_audio(path) as (stream, blocks):
        to_16k = _MonoResampler(path, stream.rate, _declared_seconds(stream), max_seconds)
        for block in blocks:
            yield from to_16k.push(block)
    yield from to_16k.finish()


class _MonoResampler:
    """Streaming down-mix and soxr resampling (the same HQ filter as to_mono_16k), with the
    checks `decode` makes (finite samples, some audio, not cut short) and the length cap."""

    def __init__(self, path: Path, sample_rate: int, declared_seconds: float | None,
                 max_seconds: float | None):
        if max_seconds is not None and declared_seconds and declared_seconds > max_seconds:
            raise AudioTooLong(path, max_seconds)
        self.path, self.sample_rate = path, sample_rate
        self.declared_seconds, self.max_seconds = declared_seconds, max_seconds
        self.frames = 0
        self._soxr = (soxr.ResampleStream(sample_rate, params.SAMPLE_RATE, 1, dtype="float32",
                                          quality="HQ")
                      if sample_rate != params.SAMPLE_RATE else None)

    def push(self, samples: np.ndarray) -> Iterator[np.ndarray]:
        self.frames += len(samples)
        if self.max_seconds is not None and self.frames > self.max_seconds * self.sample_rate:
            raise AudioTooLong(self.path, self.max_seconds)
        if not np.all(np.isfinite(samples)):
            raise AudioError(f"{self.path}: contains invalid (NaN or infinite) samples")
        yield from self._out(samples.mean(axis=1).astype(np.float32), last=False)

    def finish(self) -> Iterator[np.ndarray]:
        if self.frames == 0 or not self.sample_rate:
            raise AudioError(f"{self.path}: contains no audio")
        yield from self._out(np.zeros(0, np.float32), last=True)
        if self.declared_seconds and (self.frames / self.sample_rate
                                      < self.declared_seconds * COMPLETE_FRACTION):
            raise AudioError(f"{self.path}: truncated (the file ends before the audio its "
                             "header declares)")

    def _out(self, mono: np.ndarray, last: bool) -> Iterator[np.ndarray]:
        if self._soxr is not None:
            mono = self._soxr.resample_chunk(mono, last=last)
        if len(mono):
            yield np.clip(mono, -1.0, 1.0)


def _declared_seconds(stream) -> float | None:
    if stream.duration is None or stream.time_base is None:
        return None
    return float(stream.duration * stream.time_base)


def to_mono_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Down-mix [frames, channels] (or [frames]) to mono and resample to SAMPLE_RATE with soxr."""
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    mono = np.asarray(mono, np.float32)
    if sample_rate != params.SAMPLE_RATE:
        mono = soxr.resample(mono, sample_rate, params.SAMPLE_RATE, quality="HQ")
    return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)


def hop_samples(hop_seconds: float) -> int:
    hop = round(hop_seconds * params.SAMPLE_RATE)
    if hop <= 0:
        raise ValueError(f"the patch hop must be positive, got {hop_seconds} s")
    return hop


def frame_patches(
    waveform: np.ndarray, hop_seconds: float = params.DEFAULT_PATCH_HOP_SECONDS
) -> np.ndarray:
    """Cut a waveform into [n, PATCH_SAMPLES] patches every hop. The end is zero-padded to a
    whole number of hops (as YAMNet's own pad_waveform does), so no audio is dropped and a clip
    shorter than one patch gives one padded patch."""
    size, hop = params.PATCH_SAMPLES, hop_samples(hop_seconds)
    count = _patch_count(len(waveform), hop)
    padded = np.zeros(size + (count - 1) * hop, np.float32)
    padded[: len(waveform)] = waveform
    starts = np.arange(count) * hop
    return np.lib.stride_tricks.sliding_window_view(padded, size)[starts]


def _patch_count(samples: int, hop: int) -> int:
    """How many patches frame_patches cuts from `samples` (the last one zero-padded)."""
    return 1 + max(0, -(-(samples - params.PATCH_SAMPLES) // hop))


class PatchCutter:
    """frame_patches over a waveform that arrives block by block: the same patches, each
    returned as soon as its audio is in, holding only the audio of patches not yet cut."""

    def __init__(self, hop_seconds: float = params.DEFAULT_PATCH_HOP_SECONDS):
        self.hop = hop_samples(hop_seconds)
        self.samples = 0  # received so far
        self.count = 0  # patches cut so far
        self._pending = np.zeros(0, np.float32)  # the audio from sample `_start` on
        self._start = 0  # the next patch's start, or the end when the hop skips audio

    def push(self, block: np.ndarray) -> np.ndarray:
        """The [n, PATCH_SAMPLES] whole patches that `block` completes (n may be 0)."""
        self._pending = np.concatenate([self._pending, block.astype(np.float32, copy=False)])
        self.samples += len(block)
        whole = max(0, (self.samples - params.PATCH_SAMPLES) // self.hop + 1)
        if whole == self.count:
            return np.zeros((0, params.PATCH_SAMPLES), np.float32)
        first = self.count * self.hop - self._start
        patches = np.lib.stride_tricks.sliding_window_view(self._pending, params.PATCH_SAMPLES)[
            first::self.hop][: whole - self.count]
        self.count = whole
        start = min(self.count * self.hop, self.samples)
        self._pending = self._pending[start - self._start:]
        self._start = start
        return patches

    def finish(self) -> np.ndarray:
        """The zero-padded last patch, where frame_patches cuts one ([0 or 1, PATCH_SAMPLES])."""
        if _patch_count(self.samples, self.hop) == self.count:
            return np.zeros((0, params.PATCH_SAMPLES), np.float32)
        patch = np.zeros((1, params.PATCH_SAMPLES), np.float32)
        audio = self._pending[self.count * self.hop - self._start:]
        patch[0, : len(audio)] = audio
        self.count += 1
        return patch


def patch_start_times(count: int, hop_seconds: float) -> np.ndarray:
    return np.arange(count) * (hop_samples(hop_seconds) / params.SAMPLE_RATE)


def find_audio_files(folder: Path) -> list[Path]:
    """Audio files below a folder, by extension, in a stable order."""
    return sorted(
        p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
    )
