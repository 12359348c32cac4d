"""Capture's hub: HTTP(S) MP3/AAC streams read many to a thread, the same audio as the thread
path (FFmpeg's own demuxers), the rest handed back to it; failures retried and reported."""

import base64
import re
import signal
import socket
import ssl
import subprocess
import threading
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from pipeline_helpers import RedisServer, Services, wait_for

from services.capture.hub import Decoder
from services.capture.sources import _url_blocks
from shared import streams
from shared.messages import PcmChunk, SourceStatus

WAIT_S = 120
SECONDS = "2.5"  # of the clip: each stream is read in real time (three chunks)
PASSWORD = "S3cret-pw"


@pytest.fixture(scope="module")
def encoded(clips_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A clip as internet radio sends it: 44.1 kHz stereo MP3 (ffmpeg writes an ID3v2 tag
    first), MP2 and ADTS AAC, and as WAV (which the hub leaves to FFmpeg)."""
    folder = tmp_path_factory.mktemp("encoded")
    out = {kind: folder / f"radio.{kind}" for kind in ("mp3", "mp2", "aac", "wav")}
    for path in out.values():
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(clips_dir / "dog.mp3"), "-t", SECONDS,
                        "-ac", "2", "-ar", "44100", "-write_xing", "0", "-y", str(path)],
                       check=True)
    # An MP3 file as ffmpeg and LAME write one: a first frame with an Info (gapless) header.
    out["file"] = folder / "file.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(clips_dir / "dog.mp3"), "-t", SECONDS, "-y",
                    str(out["file"])], check=True)
    return out


@pytest.mark.parametrize("kind, codec", [("mp3", "mpeg"), ("mp2", "mpeg"), ("aac", "aac")])
def test_the_hub_decodes_as_ffmpegs_demuxer_does(encoded: dict[str, Path], kind: str,
                                                 codec: str):
    """Bytes in any pieces (the ID3 tag split across them) give the samples of the thread path."""
    data = encoded[kind].read_bytes()
    assert kind != "mp3" or data.startswith(b"ID3")
    decoder, blocks = Decoder(codec), []
    for start, size in [(0, 3), (3, 4), (7, 5), (12, 40), *((i, 997) for i in
                                                            range(52, len(data), 997))]:
        blocks += decoder.samples(data[start:start + size])
    blocks += decoder.flush()
    np.testing.assert_array_equal(np.concatenate(blocks),
                                  np.concatenate(list(_url_blocks(str(encoded[kind])))))


class Radio(BaseHTTPRequestHandler):
    """Files as a radio server sends them; /moved redirects, /private.mp3 needs Basic auth,
    /digest.mp3 asks for Digest (and takes any), /icy.mp3 answers as Shoutcast 1 does,
    /stall.mp3 stops sending after its first bytes, /cut.mp3 closes the connection there."""

    files: ClassVar[dict[str, tuple[str, bytes]]] = {}
    stop = threading.Event()

    def do_GET(self) -> None:
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/radio.mp3")
            self.end_headers()
        elif self.path == "/private.mp3" and self.headers.get("Authorization") != (
                "Basic " + base64.b64encode(f"listener:{PASSWORD}".encode()).decode()):
            self.send_response(401)  # FFmpeg sends the password once challenged
            self.send_header("WWW-Authenticate", 'Basic realm="radio"')
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/digest.mp3" and not self.headers.get(
                "Authorization", "").startswith("Digest "):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Digest realm="radio", nonce="n", qop="auth"')
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/cut.mp3":
            self._send("audio/mpeg", self.files["/radio.mp3"][1][:24_000], length=False)
        elif self.path == "/icy.mp3":
            self.wfile.write(b"ICY 200 OK\r\ncontent-type: audio/mpeg\r\n\r\n"
                             + self.files["/radio.mp3"][1])
            self.wfile.flush()
            self.stop.wait()
        elif self.path == "/stall.mp3":
            self._send("audio/mpeg", self.files["/radio.mp3"][1][:24_000], length=False)
            self.wfile.flush()
            self.stop.wait()
        elif (name := self.path.replace("private", "radio").replace("digest", "radio")
              ) in self.files:
            self._send(*self.files[name])
        else:
            self.send_error(404)

    def _send(self, content_type: str, body: bytes, length: bool = True) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def radio(encoded: dict[str, Path]) -> Iterator[str]:
    types = {"mp3": "audio/mpeg", "mp2": "audio/mpeg", "aac": "audio/aac", "wav": "audio/x-wav"}
    Radio.files = {f"/radio.{kind}": (content_type, encoded[kind].read_bytes())
                   for kind, content_type in types.items()}
    Radio.files["/mislabelled.mp3"] = ("audio/mpeg", encoded["aac"].read_bytes())
    Radio.files["/file.mp3"] = ("audio/mpeg", encoded["file"].read_bytes())
    Radio.files["/text.mp3"] = ("text/plain", encoded["mp3"].read_bytes())
    Radio.files["/page.mp3"] = ("text/html", b"<html>Back soon</html>")
    Radio.stop.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Radio)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    Radio.stop.set()
    server.shutdown()


def chunks_by_source(redis_server: RedisServer) -> dict[str, list[PcmChunk]]:
    out = defaultdict(list)
    for _, fields in redis_server.client().xrange(streams.PCM_STREAM):
        chunk = PcmChunk.decode(fields[streams.MESSAGE_FIELD])
        out[chunk.source].append(chunk)
    return dict(out)


def statuses(redis_server: RedisServer) -> dict[str, SourceStatus]:
    return {source.decode(): SourceStatus.decode(value) for source, value
            in redis_server.client().hgetall(streams.SOURCES_HASH).items()}


def test_streams_read_by_the_hub_equal_the_thread_paths(
        services: Services, redis_server: RedisServer, radio: str):
    """MP3, MP2 and AAC (also through a redirect and with a password) are read by the hub; WAV,
    AAC sent as MP3, MP3 sent as text/plain, an MP3 file's gapless header and Digest
    authentication are handed back to FFmpeg; every source's chunks are those the thread
    path gives, and no password is shown."""
    host = radio.removeprefix("http://")
    sources = [f"mp3=url:{radio}/radio.mp3", f"mp2=url:{radio}/radio.mp2",
               f"aac=url:{radio}/radio.aac", f"moved=url:{radio}/moved",
               f"private=url:http://listener:{PASSWORD}@{host}/private.mp3",
               f"wav=url:{radio}/radio.wav", f"odd=url:{radio}/mislabelled.mp3",
               f"file=url:{radio}/file.mp3", f"text=url:{radio}/text.mp3",
               f"digest=url:http://listener:{PASSWORD}@{host}/digest.mp3"]
    options = [arg for source in sources for arg in ("--source", source)]
    runs = {}
    for hub in ("1", "0"):
        redis_server.client().flushall()
        capture = services.start("capture", *options, SOUNDHIVE_CAPTURE_HUB=hub)
        assert capture.wait(WAIT_S) == 0
        runs[hub] = chunks_by_source(redis_server), services.log_text(capture)
        assert {s.state for s in statuses(redis_server).values()} == {"finished"}
    (hub_chunks, hub_log), (thread_chunks, thread_log) = runs["1"], runs["0"]
    assert "10 source(s) (10 read by the hub)" in hub_log
    assert "10 source(s) (0 read by the hub)" in thread_log
    assert "text: HTTP 200, text/plain, read through FFmpeg" in hub_log
    assert "file: an MP3 file's gapless header" in hub_log
    assert "digest: the server asks for an authentication other than Basic" in hub_log
    assert "wav: HTTP 200, audio/x-wav, read through FFmpeg" in hub_log
    assert re.search(r"odd: (not decoded by the hub|no audio in its first 64 KB).*, read "
                     "through FFmpeg", hub_log), hub_log
    assert sorted(hub_chunks) == sorted(thread_chunks) == sorted(s.split("=")[0]
                                                                 for s in sources)
    for source, chunks in hub_chunks.items():
        expected = thread_chunks[source]
        assert [c.seq for c in chunks] == list(range(len(expected))), source
        assert [c.last for c in chunks] == [c.last for c in expected] == [False] * (
            len(chunks) - 1) + [True]
        np.testing.assert_array_equal(np.concatenate([c.samples() for c in chunks]),
                                      np.concatenate([c.samples() for c in expected]))
    assert PASSWORD not in hub_log + thread_log


def test_a_silent_stream_and_a_missing_one_are_retried(
        services: Services, redis_server: RedisServer, radio: str):
    """A stream that stops sending is given up after 10 s and opened again (its chunks until
    then kept, the last one flagged); one whose server closes it mid-stream is opened again;
    a 404 and a web page are retried with backoff; a response in Shoutcast 1's dialect goes to
    FFmpeg, which
    reads it; servers that accept and never answer hold no one else up; a stop ends them all."""
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        dead = [arg for i in range(40) for arg in (
            "--source", f"dead{i}=url:http://127.0.0.1:{silent.getsockname()[1]}/{i}.mp3")]
        capture = services.start("capture", *dead, "--source", f"stall=url:{radio}/stall.mp3",
                                 "--source", f"gone=url:{radio}/gone.mp3",
                                 "--source", f"icy=url:{radio}/icy.mp3",
                                 "--source", f"cut=url:{radio}/cut.mp3",
                                 "--source", f"page=url:{radio}/page.mp3")
        wait_for(lambda: "cut" in chunks_by_source(redis_server), 8, "the live sources' audio")
        check_retries(services, redis_server, radio, capture)


def check_retries(services: Services, redis_server: RedisServer, radio: str,
                  capture: subprocess.Popen) -> None:

    def retrying(source: str, reason: str) -> bool:
        status = statuses(redis_server).get(source)
        return status is not None and status.state == "retrying" and reason in status.detail

    wait_for(lambda: retrying("gone", f"cannot open {radio}/gone.mp3: HTTP 404"), WAIT_S,
             "the 404 retried")
    wait_for(lambda: retrying("cut", f"{radio}/cut.mp3: the server closed the stream"), WAIT_S,
             "the cut stream retried")
    wait_for(lambda: retrying("page", "HTTP 200 with text/html, not audio"), WAIT_S,
             "a maintenance page retried")
    wait_for(lambda: retrying("stall", f"{radio}/stall.mp3: no data for 10 s"), WAIT_S,
             "the stall retried")
    first = chunks_by_source(redis_server)["stall"]
    assert first and first[-1].last and [c.seq for c in first] == list(range(len(first)))
    wait_for(lambda: len(chunks_by_source(redis_server)["stall"]) > len(first), WAIT_S,
             "the stream opened again")
    assert chunks_by_source(redis_server)["icy"]
    capture.send_signal(signal.SIGTERM)
    assert capture.wait(WAIT_S) == 0
    log = services.log_text(capture)
    assert "source gone failed: cannot open" in log
    assert "icy: a response h11 does not read" in log and "read through FFmpeg" in log


def test_https_is_read_by_the_hub_when_its_certificate_verifies(
        services: Services, redis_server: RedisServer, encoded: dict[str, Path],
        tmp_path: Path):
    """The hub verifies certificates (SSL_CERT_FILE names the trusted ones); a stream whose
    certificate does not verify (a camera's own) goes to FFmpeg, which reads it unverified, as
    every HTTPS source was read before the hub."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    Radio.files = {"/radio.mp3": ("audio/mpeg", encoded["mp3"].read_bytes())}
    server = ThreadingHTTPServer(("127.0.0.1", 0), Radio)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}/radio.mp3"
    try:
        logs, samples = [], []
        for trusted in (str(cert), str(tmp_path / "none.pem")):
            redis_server.client().flushall()
            capture = services.start("capture", "--source", f"tls=url:{url}",
                                     SSL_CERT_FILE=trusted)
            assert capture.wait(WAIT_S) == 0
            chunks = chunks_by_source(redis_server)["tls"]
            samples.append(np.concatenate([c.samples() for c in chunks]))
            logs.append(services.log_text(capture))
    finally:
        server.shutdown()
    assert "read through FFmpeg" not in logs[0]
    assert "tls: its certificate does not verify (self-signed certificate): FFmpeg does not " \
        "check, read through FFmpeg" in logs[1]
    np.testing.assert_array_equal(samples[0], samples[1])
