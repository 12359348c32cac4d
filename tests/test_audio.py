"""Decoding any file to 16 kHz mono, and cutting it into patches."""

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
from audio_bombs import silent_flac

from shared import params
from shared.audio import (
    AudioError,
    AudioTooLong,
    PatchCutter,
    find_audio_files,
    frame_patches,
    load_audio,
    stream_audio,
)


def tone(frequency: float, seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * frequency * t)
    return np.repeat(wave[:, None], channels, axis=1).astype(np.float32)


def dominant_frequency(waveform: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(waveform))
    return float(np.argmax(spectrum) * params.SAMPLE_RATE / len(waveform))


@pytest.mark.parametrize(
    ("suffix", "subtype", "rate", "channels"),
    [
        (".wav", "PCM_16", 44100, 2),
        (".wav", "PCM_24", 8000, 1),
        (".wav", "FLOAT", 48000, 6),
        (".flac", "PCM_16", 22050, 2),
        (".ogg", "VORBIS", 32000, 2),
        (".mp3", "MPEG_LAYER_III", 48000, 1),
    ],
)
def test_any_format_rate_and_channels_become_16k_mono(tmp_path, suffix, subtype, rate, channels):
    path = tmp_path / f"tone{suffix}"
    soundfile.write(path, tone(1000, 2.0, rate, channels), rate, subtype=subtype)
    waveform = load_audio(path)
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    assert abs(len(waveform) - 2 * params.SAMPLE_RATE) < 0.02 * params.SAMPLE_RATE
    assert abs(dominant_frequency(waveform) - 1000) < 5
    assert 0.3 < np.abs(waveform).max() <= 1.0


def test_ffmpeg_formats_decode(tmp_path):
    path = tmp_path / "tone.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100, layout="stereo")
        samples = tone(440, 1.5, 44100, 2).T.copy()
        for start in range(0, samples.shape[1], 1024):
            block = samples[:, start : start + 1024]
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            frame.sample_rate = 44100
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    waveform = load_audio(path)
    assert abs(len(waveform) / params.SAMPLE_RATE - 1.5) < 0.1
    assert abs(dominant_frequency(waveform) - 440) < 5


def truncate(path: Path, keep_fraction: float) -> Path:
    data = path.read_bytes()
    cut = path.with_name("cut-" + path.name)
    cut.write_bytes(data[: int(len(data) * keep_fraction)])
    return cut


@pytest.mark.parametrize(("suffix", "subtype"), [(".wav", "PCM_16"), (".flac", "PCM_16")])
def test_truncated_files_are_refused(tmp_path, suffix, subtype):
    path = tmp_path / f"long{suffix}"
    soundfile.write(path, tone(300, 5.0, 16000), 16000, subtype=subtype)
    with pytest.raises(AudioError, match="truncated"):
        load_audio(truncate(path, 0.3))


def test_truncated_mp3_is_refused(clips_dir, tmp_path):
    copy = tmp_path / "dog.mp3"
    copy.write_bytes((clips_dir / "dog.mp3").read_bytes())
    with pytest.raises(AudioError, match="truncated"):
        load_audio(truncate(copy, 0.2))


def test_streamed_wav_with_placeholder_size_is_not_truncation(tmp_path):
    path = tmp_path / "streamed.wav"
    soundfile.write(path, tone(300, 1.0, 16000), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data_chunk = data.index(b"data")
    data[data_chunk + 4 : data_chunk + 8] = (0xFFFFFFFF).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    assert abs(len(load_audio(path)) - 16000) < 10


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty file"), (b"RIFF....WAVEfmt garbage" * 10, "not a readable audio file")],
)
def test_unreadable_files_raise_one_line(tmp_path, content, message):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=message) as error:
        load_audio(path)
    assert "\n" not in str(error.value)


def test_text_file_and_missing_file(tmp_path):
    text = tmp_path / "notes.mp3"
    text.write_text("not audio at all\n" * 50)
    with pytest.raises(AudioError):
        load_audio(text)
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "absent.wav")


def test_short_clip_is_zero_padded_to_one_patch():
    patches = frame_patches(np.ones(1000, np.float32))
    assert patches.shape == (1, params.PATCH_SAMPLES)
    assert patches[0, :1000].sum() == 1000 and not patches[0, 1000:].any()


@pytest.mark.parametrize(
    ("samples", "expected"), [(15600, 1), (15601, 2), (15600 + 7680, 2), (15600 + 7681, 3)]
)
def test_patches_cover_the_whole_clip(samples, expected):
    waveform = np.arange(samples, dtype=np.float32)
    patches = frame_patches(waveform, 0.48)
    assert len(patches) == expected
    assert patches[-1].max() == samples - 1  # the tail is kept, not dropped
    assert np.array_equal(patches[1][:100], waveform[7680:7780]) if expected > 1 else True


def test_find_audio_files_is_recursive_and_sorted(tmp_path):
    for name in ("b.wav", "a/c.MP3", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in find_audio_files(tmp_path)] == [
        "a/c.MP3",
        "b.wav",
    ]


@pytest.mark.parametrize("hop_seconds", [0.48, 0.975, 2.0])
@pytest.mark.parametrize("block", [1, 5000, 16000])
def test_patch_cutter_cuts_what_frame_patches_cuts(hop_seconds, block):
    for samples in (0, 1, 15599, 15600, 15601, 23280, 23281, 31999, 47000):
        waveform = np.random.default_rng(samples).standard_normal(samples).astype(np.float32)
        cutter = PatchCutter(hop_seconds)
        cut = [cutter.push(waveform[start: start + block]) for start in range(0, samples, block)]
        patches = np.concatenate([*cut, cutter.finish()])
        assert np.array_equal(patches, frame_patches(waveform, hop_seconds)), samples
        assert cutter.count == len(patches) and cutter.samples == samples


def test_streamed_decoding_is_the_whole_file_decoding(clips_dir):
    for clip in find_audio_files(clips_dir):  # MP3s whose header overstates their length too
        streamed, whole = np.concatenate(list(stream_audio(clip, 1.0))), load_audio(clip)
        assert len(streamed) == len(whole), clip.name
        np.testing.assert_allclose(streamed, whole, atol=1e-6)  # soxr's float rounding


def test_a_declared_length_over_the_cap_is_refused_before_decoding(tmp_path):
    blocks = stream_audio(silent_flac(tmp_path / "1h.flac", 3600), 1.0, max_seconds=600)
    with pytest.raises(AudioTooLong, match=r"1h\.flac: more than 600 s of audio"):
        next(blocks)


@pytest.mark.parametrize("rate", [16000, 44100])
def test_an_undeclared_length_is_counted_and_decoding_stops_at_the_cap(tmp_path, rate):
    path = silent_flac(tmp_path / "1h.flac", 3600, rate, declared=False)
    decoded = 0
    with pytest.raises(AudioTooLong):
        for block in stream_audio(path, 1.0, max_seconds=60):
            decoded += len(block)
    assert 59 * params.SAMPLE_RATE < decoded <= 61 * params.SAMPLE_RATE


def test_audio_up_to_the_cap_is_decoded(tmp_path):
    for declared in (True, False):
        path = silent_flac(tmp_path / f"{declared}.flac", 60, declared=declared)
        assert sum(map(len, stream_audio(path, 1.0, max_seconds=60))) == 60 * params.SAMPLE_RATE
