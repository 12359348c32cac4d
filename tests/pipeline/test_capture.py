"""Capture: gapless self-contained chunks, sources, PyAudio through ALSA, saved WAVs, CLI errors."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from pipeline_helpers import REPO, RedisServer, Services, wait_for

from services.capture.service import Chunker
from services.capture.settings import CaptureSettings
from services.capture.sources import SourceError, _url_blocks, parse_sources
from shared import streams
from shared.audio import frame_patches, load_audio
from shared.config import ConfigError
from shared.messages import CHUNK_SAMPLES, PcmChunk, Prediction

WAIT_S = 120


def test_chunks_carry_every_patch_once_without_gaps(clips_dir: Path):
    audio = load_audio(clips_dir / "dog.mp3")
    chunker = Chunker()
    chunks = [c for start in range(0, len(audio), 1000)
              for c in chunker.push(audio[start:start + 1000])]
    final = chunker.finish()
    assert final is not None
    chunks.append(final)
    patches = np.concatenate([
        PcmChunk.from_samples("s", "x", i, 0.0, start / 16000, samples, False).patches()
        for i, (start, samples) in enumerate(chunks)
    ])
    reference = frame_patches(audio)  # every 0.48 s, whole patches only
    assert len(patches) >= len(reference)
    np.testing.assert_allclose(patches[: len(reference)], reference, atol=1 / 32768)
    assert [start for start, _ in chunks] == [i * 15360 for i in range(len(chunks))]
    assert all(len(samples) == CHUNK_SAMPLES for _, samples in chunks)


def test_source_specs(clips_dir: Path, tmp_path: Path):
    specs = parse_sources([f"file:{clips_dir}", "mic:2", "url:http://example.com/a.mp3",
                           "rtsp://cam/stream", f"file:{tmp_path / 'missing.wav'}"])
    kinds = {s.id: s.kind for s in specs}
    assert kinds["dog.mp3"] == "file" and kinds["missing.wav"] == "file"
    assert kinds["mic:2"] == "mic"
    assert kinds["http://example.com/a.mp3"] == kinds["rtsp://cam/stream"] == "url"
    for bad in ("microphone", "file:", f"file:{tmp_path}", "url:ftp://x", "=mic",
                "yard=nope:x", f"{'n' * 65}=mic", "a\tb=mic"):
        with pytest.raises(SourceError, match="bad --source"):
            parse_sources([bad])


def test_named_sources_and_ids_without_secrets(clips_dir: Path):
    url = "rtsp://admin:S3cret@cam/user=admin&password=S3cret&channel=1?token=T0k"
    specs = parse_sources([f"yard=url:{url}", url.replace("cam", "cam2"), "Küche=mic:USB",
                           f"farm=file:{clips_dir}", f"file:{clips_dir / 'dog.mp3'}",
                           "file:/recordings/take=2.wav", "http://radio/live?token=T0k&a=b"])
    ids = {spec.id: spec for spec in specs}
    assert ids["yard"].target == url and ids["yard"].kind == "url"
    assert "rtsp://cam2/user=***&password=***&channel=1?token=***" in ids
    assert ids["Küche"].kind == "mic" and ids["Küche"].target == "USB"
    assert "farm/dog.mp3" in ids and "dog.mp3" in ids and "take=2.wav" in ids
    assert "http://radio/live?token=***&a=b" in ids
    assert not any("S3cret" in repr(spec) or "T0k" in repr(spec) for spec in specs)
    with pytest.raises(SourceError, match=re.escape(
            "both named 'rtsp://cam/stream?token=***': give them names")):
        parse_sources(["rtsp://cam/stream?token=a", "rtsp://cam/stream?token=b"])
    with pytest.raises(SourceError) as bad:
        parse_sources(["url:ftp://admin:S3cret@cam/x"])
    assert "S3cret" not in str(bad.value)


def test_a_bad_sources_setting_is_not_echoed(monkeypatch):
    monkeypatch.setenv("SOUNDHIVE_CAPTURE_SOURCES", '["url:rtsp://admin:S3cret@cam/x"')
    with pytest.raises(ConfigError, match="SOUNDHIVE_CAPTURE_SOURCES: ") as bad:
        CaptureSettings()
    assert "S3cret" not in str(bad.value)


def test_bad_source_is_one_line_error():
    result = subprocess.run([sys.executable, "-m", "soundhive", "up", "--source", "nope:x"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: bad --source 'nope:x': use [NAME=]mic[:DEVICE], file:PATH or url:URL")


def test_a_bad_sources_file_is_one_line_error_naming_no_secret(tmp_path: Path):
    def up(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "soundhive", "up", "--sources-file",
                               str(path)], cwd=REPO, capture_output=True, text=True, timeout=60)

    (tmp_path / "empty").write_text("\n")
    (tmp_path / "bad").write_text("yard=url:rtsp://admin:S3cret@cam/x url:ftp://admin:S3cret@cam/x")
    (tmp_path / "json").write_text('["url:rtsp://admin:S3cret@cam/x", 3]')
    (tmp_path / "cut").write_text('["url:rtsp://admin:S3cret@cam/x", ')
    expected = {
        "missing": f"--sources-file: cannot read {tmp_path / 'missing'} (No such file or "
                   "directory)",
        "empty": f"--sources-file: {tmp_path / 'empty'} is empty",
        "bad": "bad --source 'url:ftp://cam/x': a URL starts with one of http://, https://, "
               "rtsp://, rtsps://, rtmp://, rtp://, udp://, tcp://, srt://",
        "json": f"--sources-file {tmp_path / 'json'}: the sources are not a JSON list of "
                "strings",
        "cut": f"--sources-file {tmp_path / 'cut'}: the sources are not a valid JSON list"}
    for name, error in expected.items():
        result = up(tmp_path / name)
        assert result.returncode == 2, name
        assert result.stderr.strip() == f"error: {error}", name


def test_unreadable_files_fail_once_while_others_run(
        services: Services, redis_server: RedisServer, clips_dir: Path, tmp_path: Path):
    from shared.messages import SourceStatus

    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.mp3").write_text("not audio at all\n" * 100)
    soundfile.write(tmp_path / "cut.wav", np.zeros(32000, np.float32), 16000)
    whole = (tmp_path / "cut.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(whole[: len(whole) // 2])
    client = redis_server.client()
    capture = services.start("capture", "--fast", "--save-path", str(tmp_path / "saved"),
                             *[arg for name in ("missing.wav", "empty.wav", "notes.mp3",
                                                "cut.wav")
                               for arg in ("--source", f"file:{tmp_path / name}")],
                             "--source", f"file:{clips_dir / 'speech.wav'}")
    assert capture.wait(WAIT_S) == 1  # ends by itself; 1: a source failed
    statuses = {s.source: s for s in map(SourceStatus.decode, client.hvals(streams.SOURCES_HASH))}
    reasons = {"missing.wav": "no such file", "empty.wav": "empty file",
               "notes.mp3": "not a readable audio file", "cut.wav": "truncated"}
    for source, reason in reasons.items():
        assert statuses[source].state == "failed", statuses[source]
        assert reason in statuses[source].detail
        assert services.log_text(capture).count(f"source {source} failed") == 1  # not retried
    assert statuses["speech.wav"].state == "finished"
    saved = sorted((tmp_path / "saved").glob("speech.wav-*.wav"))
    assert len(saved) == 1
    kept, rate = soundfile.read(saved[0], dtype="float32")
    assert rate == 16000
    np.testing.assert_allclose(kept, load_audio(clips_dir / "speech.wav"), atol=1 / 16384)


def test_pyaudio_capture_through_alsa_file_pcm(services: Services, redis_server: RedisServer,
                                               tmp_path: Path):
    pytest.importorskip("pyaudio", reason="the mic extra (./scripts/install.sh installs it)")
    t = np.arange(16000 * 60) / 16000
    (0.5 * np.sin(2 * np.pi * 440 * t)).astype("<f4").tofile(tmp_path / "tone.raw")
    config = tmp_path / "asound.conf"
    config.write_text(f"""
pcm.!default {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{tmp_path / 'tone.raw'}"
    format "raw"
    hint {{ show on description "soundhive test tone" }}
}}
""")
    alsa = {"ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{config}"}
    listing = subprocess.run([sys.executable, "-m", "soundhive", "devices"], cwd=REPO,
                             env={**os.environ, **alsa}, capture_output=True, text=True,
                             timeout=60)
    assert listing.returncode == 0 and "default" in listing.stdout
    client = redis_server.client()
    capture = services.start("capture", "--source", "mic:default", **alsa)
    chunks = wait_for(lambda: len(c := [PcmChunk.decode(f[streams.MESSAGE_FIELD]) for _, f in
                                        client.xrange(streams.PCM_STREAM)]) >= 3 and c,
                      WAIT_S, "three chunks from the ALSA device")
    capture.send_signal(signal.SIGTERM)
    assert capture.wait(WAIT_S) == 0
    for chunk in chunks[:3]:
        assert chunk.source == "mic:default"
        assert chunk.rms == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
        spectrum = np.abs(np.fft.rfft(chunk.samples()))
        assert np.argmax(spectrum) * 16000 / CHUNK_SAMPLES == pytest.approx(440, abs=2)
    assert [c.seq for c in chunks[:3]] == [0, 1, 2]
    assert chunks[1].t - chunks[0].t == pytest.approx(0.96, abs=1e-6)


def test_network_audio_is_resampled_as_pyav_does_without_a_thread_pool(
        clips_dir: Path, tmp_path: Path):
    """Network streams' blocks hold the very samples av.AudioResampler gives (16 kHz mono
    float32, its delayed tail not flushed), and their filter graph starts no threads."""
    import av

    stereo = tmp_path / "stereo.wav"  # int16, 44.1 kHz, two different channels
    soundfile.write(stereo, np.random.default_rng(0).uniform(-0.5, 0.5, (44100 * 3, 2)), 44100,
                    subtype="PCM_16")
    for path in (clips_dir / "dog.mp3", stereo):  # float planar 48 kHz mono; int16 stereo
        threads = len(os.listdir("/proc/self/task"))
        blocks = []
        for block in _url_blocks(str(path)):
            blocks.append(block)
            assert len(os.listdir("/proc/self/task")) == threads
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        with av.open(str(path)) as container:
            expected = [out.to_ndarray().reshape(-1)
                        for frame in container.decode(container.streams.audio[0])
                        for out in resampler.resample(frame)]
        assert all(block.dtype == np.float32 for block in blocks)
        assert all(len(block) >= 1600 for block in blocks[:-1])
        np.testing.assert_array_equal(np.concatenate(blocks), np.concatenate(expected))


def test_a_stream_whose_audio_format_changes_goes_on_resampled():
    """A radio's next programme may change rate and channels mid-stream: the new frames get a
    filter graph of their own (FFmpeg refuses them in the old one), once the old one has given
    up the samples it held back."""
    from fractions import Fraction

    import av

    from services.capture.sources import Downmix

    downmix, counts = Downmix(), []
    formats = ((44100, "stereo", 2), (22050, "mono", 1))
    for rate, layout, channels in formats:
        got = 0
        for i in range(40):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1152 * channels), np.int16),
                                               format="s16", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, i * 1152, Fraction(1, rate)
            got += sum(len(samples) for samples in downmix.samples(frame))
        counts.append(got)
    expected = [40 * 1152 * 16000 / rate for rate, _, _ in formats]
    assert all(want * 0.97 <= got for got, want in zip(counts, expected, strict=True)), counts
    # Only the last format's few held-back samples are missing (~16): the old graph gave up
    # its own before the new one took over.
    assert sum(expected) - 24 <= sum(counts) <= sum(expected), (counts, expected)


def test_network_url_source_over_http(services: Services, redis_server: RedisServer,
                                      clips_dir: Path):
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(clips_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/speech.wav"
        client = redis_server.client()
        capture = services.start("capture", "--source", f"url:{url}")
        assert capture.wait(WAIT_S) == 0  # a stream that ends is done, not replayed
        chunks = [PcmChunk.decode(f[streams.MESSAGE_FIELD]) for _, f
                  in client.xrange(streams.PCM_STREAM)]
    finally:
        server.shutdown()
    assert [c.seq for c in chunks] == list(range(len(chunks))) and chunks[-1].last
    first = np.concatenate([c.samples() for c in chunks[:1]])
    np.testing.assert_allclose(first, load_audio(clips_dir / "speech.wav")[:CHUNK_SAMPLES],
                               atol=2e-3)
    assert "speech.wav finished" in services.log_text(capture)


def test_a_file_waits_for_the_pipeline_instead_of_being_trimmed(
        services: Services, redis_server: RedisServer, tmp_path: Path):
    noise = tmp_path / "long.wav"
    soundfile.write(noise, np.random.default_rng(0).standard_normal(16000 * 60) * 0.1, 16000)
    client = redis_server.client()
    capture = services.start("capture", "--fast", "--source", f"file:{noise}",
                             SOUNDHIVE_BACKLOG_MAX="10")
    wait_for(lambda: client.xlen(streams.PCM_STREAM) >= 10, WAIT_S, "ten chunks")
    time.sleep(2)
    assert client.xlen(streams.PCM_STREAM) == 10 and capture.poll() is None  # holding back
    services.start("features")
    services.start("classifier")
    assert capture.wait(WAIT_S) == 0
    chunks = 62  # 60 s: 61 whole chunks of 1.455 s every 0.96 s, and the padded rest
    assert f"long.wav finished ({chunks} chunks)" in services.log_text(capture)

    def predicted() -> list[int]:
        return [Prediction.decode(f[streams.MESSAGE_FIELD]).seq
                for _, f in client.xrange(streams.PREDICTIONS_STREAM)]

    wait_for(lambda: len(predicted()) >= chunks, WAIT_S, "every chunk's prediction")
    assert predicted() == list(range(chunks))


def test_live_audio_past_the_backlog_is_dropped_and_counted(
        services: Services, redis_server: RedisServer, http_folder):
    folder, base_url = http_folder
    soundfile.write(folder / "radio.wav", np.full(16000 * 20, 0.1, np.float32), 16000)
    capture = services.start("capture", "--source", f"url:{base_url}/radio.wav",
                             SOUNDHIVE_BACKLOG_MAX="2")
    assert capture.wait(WAIT_S) == 0  # paced in real time, then the stream ends
    written = redis_server.client().xlen(streams.PCM_STREAM)
    assert written == 2  # no consumer: the backlog bound holds
    log = services.log_text(capture)
    assert "finished (21 chunks)" in log
    match = re.search(r"dropped ([\d.]+) s of audio \(backlog ([\d.]+) s, shutdown ([\d.]+) s",
                      log)
    assert match, log
    total, backlog, shutdown = map(float, match.groups())
    assert backlog >= 10 * 0.96 and total == pytest.approx(backlog + shutdown, abs=0.11)
    assert written + round(total / 0.96) == 21  # every chunk written or counted
