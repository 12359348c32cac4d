"""HTTP(S) audio streams read many to a thread: MPEG audio (MP3, MP2) or ADTS AAC sent as one
HTTP response, the way internet radio (Icecast, most Shoutcast 2) and many network microphones
serve them.

A thread per source (sources.py, through FFmpeg's own protocols and demuxers) costs more than
FFmpeg's decoding, and one process's source threads thrash on the GIL past ~50 network streams
(docs/benchmarks.md). The hub serves every such source of a process from one thread: every
TICK_S it reads what each ready socket holds (non-blocking), splits the bytes into codec
packets (FFmpeg's parser), decodes them with the decoder FFmpeg's demuxer would pick and
downmixes them with sources.Downmix: the same samples as the thread path. A source's audio is
handed to its Recording when due in real time; a source ahead of real time is not read (so a
server that sends faster is held back by TCP, as the thread path's pacing holds it).
Connecting (DNS, TCP, TLS, the request, the response's head) blocks, so OPENERS threads do it.
Failures are the thread path's (SourceError: retried; SourceGone: reported once). What the hub
cannot read (NotForHub: another content type, Shoutcast 1's "ICY 200 OK", Digest
authentication, an MP3 file's gapless header, a body it cannot decode, a certificate that does
not verify...) is handed back: that source then runs in a thread of its own through FFmpeg, as
every network source did before.
"""

from __future__ import annotations

import base64
import functools
import heapq
import logging
import os
import queue
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote, urljoin, urlsplit

import h11
import numpy as np

from services.capture.sources import NETWORK_TIMEOUT_S, Downmix, SourceError, SourceGone
from shared import bus, metrics
from shared.errors import one_line
from shared.redact import redact

if TYPE_CHECKING:  # the service imports the hub
    from services.capture.service import Recording, SourceRunner

log = logging.getLogger("soundhive.capture")

TICK_S = 0.1
# Connections opened at once: a source whose server accepts and never answers holds one for
# NETWORK_TIMEOUT_S; first attempts are opened before retries.
OPENERS = 64
READ_AHEAD_S = 1.0  # a source this far ahead of real time is not read
READ_MAX = 1 << 14  # bytes read from one socket in a tick (128 kbit/s: 1.6 KB a tick)
FIRST_AUDIO_BYTES = 1 << 16  # a response with no audio in these is handed back to FFmpeg
MAX_REDIRECTS = 5
PROXY_VARIABLES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")
# Content types the hub decodes: MPEG audio (MP3, MP2) or ADTS AAC.
KINDS = {
    "audio/mpeg": "mpeg", "audio/mp3": "mpeg", "audio/mpeg3": "mpeg", "audio/x-mpeg": "mpeg",
    "audio/mpga": "mpeg", "audio/aac": "aac", "audio/aacp": "aac", "audio/x-aac": "aac",
}
# The decoders FFmpeg picks after its demuxers (the first registered for the codec): for MPEG
# audio by the layer in a frame's header. Each rounds differently from its twin ("mp3" is
# fixed-point, "mp2float" floating-point): the samples would not be the thread path's.
MPEG_LAYERS = {1: "mp3float", 2: "mp2", 3: "mp1"}


def accepts(target: str, fast: bool) -> bool:
    """Whether the hub may try this source (a URL): HTTP(S), replayed in real time (--fast
    makes a stream wait for the pipeline, which one thread cannot do for one source), and no
    proxy configured (FFmpeg's own client honours http_proxy)."""
    return (target.startswith(("http://", "https://")) and not fast
            and not any(os.environ.get(name) for name in PROXY_VARIABLES))


class NotForHub(Exception):
    """A response the hub does not read: the source goes to a thread of its own."""


@dataclass
class Response:
    """An HTTP response whose head has been read (h11 may hold the body's first bytes)."""

    sock: socket.socket
    http: h11.Connection
    kind: str  # a value of KINDS
    ends_by_close: bool  # no Content-Length, not chunked: only a closed connection ends it


def open_stream(url: str, timeout_s: float = NETWORK_TIMEOUT_S) -> Response:
    """GET `url` (following redirects); a Response for a stream the hub decodes. SourceError
    for a server that cannot be reached or answers an error, NotForHub for a response it does
    not decode."""
    shown = redact(url)
    deadline = time.monotonic() + timeout_s
    for _ in range(MAX_REDIRECTS + 1):
        try:
            response = _get(url, deadline)
        except ssl.SSLCertVerificationError as exc:
            # FFmpeg does not verify certificates (a camera's own, self-signed): as before.
            raise NotForHub(f"its certificate does not verify ({exc.verify_message}): FFmpeg "
                            "does not check") from None
        except h11.LocalProtocolError as exc:  # a request h11 will not send (a space in a path)
            raise NotForHub(f"a request h11 does not send ({one_line(exc)})") from None
        except (OSError, h11.ProtocolError) as exc:
            raise SourceError(f"cannot open {shown}: {_why(exc)}") from None
        if isinstance(response, Response):
            return response
        url = response
        if not accepts(url, fast=False):
            raise NotForHub("redirected to another protocol")
    raise SourceError(f"cannot open {shown}: more than {MAX_REDIRECTS} redirects")


def _get(url: str, deadline: float) -> Response | str:
    """One request: the Response, or where a redirect points; the connection and the
    response's head by the deadline (time.monotonic(); the name's lookup is not bounded)."""
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError:
        raise SourceGone(f"{redact(url)}: not a port number") from None
    if not parts.hostname:
        raise SourceGone(f"{redact(url)}: no host")
    sock = socket.create_connection((parts.hostname, port),
                                    timeout=max(0.001, deadline - time.monotonic()))
    try:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        if tls:
            sock = _tls().wrap_socket(sock, server_hostname=parts.hostname)
        http = h11.Connection(h11.CLIENT)
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        host += f":{parts.port}" if parts.port is not None else ""
        headers = [("Host", host), ("User-Agent", "soundhive"), ("Accept", "*/*"),
                   ("Connection", "close")]
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            headers.append(("Authorization",
                            "Basic " + base64.b64encode(credentials.encode()).decode()))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        sock.sendall(http.send(h11.Request(method="GET", target=target, headers=headers))
                     + http.send(h11.EndOfMessage()))
        head = _head(sock, http, deadline)
        if 300 <= head.status_code < 400 and (location := _header(head, b"location")):
            sock.close()
            return urljoin(url, location)
        challenge = _header(head, b"www-authenticate").lower()
        if head.status_code == 401 and challenge and not challenge.startswith("basic"):
            raise NotForHub("the server asks for an authentication other than Basic")
        if head.status_code >= 400:
            raise OSError(f"HTTP {head.status_code} {head.reason.decode(errors='replace')}")
        content_type = _header(head, b"content-type").split(";")[0].strip().lower()
        if head.status_code == 200 and content_type == "text/html":
            # A server's page (maintenance, an error) in the stream's place: try again later.
            # (Other text/* may be audio or a playlist mislabelled: FFmpeg looks at the bytes.)
            raise OSError("HTTP 200 with text/html, not audio")
        if head.status_code != 200 or content_type not in KINDS:
            raise NotForHub(f"HTTP {head.status_code}, {content_type or 'no content type'}")
        sock.setblocking(False)
        framed = _header(head, b"content-length") or "chunked" in _header(
            head, b"transfer-encoding").lower()
        return Response(sock, http, KINDS[content_type], ends_by_close=not framed)
    except BaseException:
        sock.close()
        raise


@functools.cache
def _tls() -> ssl.SSLContext:
    """One context for every connection (each loads the system's CA certificates)."""
    return ssl.create_default_context()


def _head(sock: socket.socket, http: h11.Connection, deadline: float) -> h11.Response:
    while True:
        event = _next_event(http)
        if event is h11.NEED_DATA:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            data = sock.recv(READ_MAX)
            if not data:  # a server going down or restarting: retried
                raise OSError("the server closed the connection before answering")
            http.receive_data(data)
        elif isinstance(event, h11.Response):
            return event
        elif isinstance(event, h11.ConnectionClosed):
            raise OSError("the server closed the connection")
        elif not isinstance(event, h11.InformationalResponse):
            raise OSError(f"unexpected {type(event).__name__}")


def _next_event(http: h11.Connection) -> object:
    try:
        return http.next_event()
    except h11.RemoteProtocolError as exc:  # e.g. "ICY 200 OK": FFmpeg reads it
        raise NotForHub(f"a response h11 does not read ({one_line(exc)})") from None


def _header(head: h11.Response, name: bytes) -> str:
    return next((value.decode("latin-1") for key, value in head.headers if key == name), "")


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):  # socket.timeout too
        return f"no answer in {NETWORK_TIMEOUT_S:.0f} s"
    return redact(getattr(exc, "strerror", None) or one_line(exc))


class Decoder:
    """An MPEG audio (MP3, MP2) or ADTS AAC byte stream (`kind`) -> float32 mono 16 kHz
    blocks, as the thread path decodes it: FFmpeg's parser cuts the packets, the decoder its
    demuxer would pick decodes them, Downmix; an MPEG stream's leading ID3v2 tag is skipped,
    as the demuxer skips it."""

    def __init__(self, kind: str):
        import av

        self._parser = av.CodecContext.create("mp3float" if kind == "mpeg" else "aac", "r")
        self._kind = kind
        self._decoder: av.CodecContext | None = None  # chosen by the first packet
        self._downmix = Downmix()
        self._head = b"" if kind == "mpeg" else None  # bytes kept until the tag is known
        self._skip = 0  # bytes of the tag still to skip

    def samples(self, data: bytes) -> list[np.ndarray]:
        data = self._without_tag(data)
        return self._decoded(self._parser.parse(data)) if data else []

    def flush(self) -> list[np.ndarray]:
        """What the parser and the decoder still hold, at the stream's end."""
        if self._head:
            self._head, data = None, self._head
            out = self._decoded(self._parser.parse(data))
        else:
            out = []
        out += self._decoded(self._parser.parse(None))
        return out + (self._decoded([None]) if self._decoder is not None else [])

    def _decoded(self, packets: list) -> list[np.ndarray]:
        for packet in packets:
            if self._decoder is None and self._kind == "mpeg" and _gapless_header(bytes(packet)):
                raise NotForHub("an MP3 file's gapless header (Xing, Info or VBRI), which "
                                "FFmpeg's demuxer trims the audio by")
            decoder = self._decoder or self._decoder_for(packet)
            for frame in decoder.decode(packet):
                self._downmix.push(frame)
        return self._downmix.pull()

    def _decoder_for(self, packet: object) -> object:
        import av

        codec = "aac" if self._kind == "aac" else MPEG_LAYERS.get(bytes(packet)[1] >> 1 & 3,
                                                                  "mp3float")
        # The parser's own context decodes when it is the right decoder (memory: one a stream).
        self._decoder = (self._parser if codec == self._parser.codec.name
                         else av.CodecContext.create(codec, "r"))
        return self._decoder

    def _without_tag(self, data: bytes) -> bytes:
        if self._skip:
            data, self._skip = data[self._skip:], max(0, self._skip - len(data))
            return data
        if self._head is None:
            return data
        self._head += data
        if len(self._head) < 10:
            return b""
        head, self._head = self._head, None
        if head[:3] != b"ID3":
            return head
        size = 0  # a "synchsafe" integer: 7 bits a byte
        for byte in head[6:10]:
            size = size << 7 | byte & 0x7F
        size += 10 + (10 if head[5] & 0x10 else 0)  # the header (and a footer)
        self._skip = max(0, size - len(head))
        return head[size:]


def _gapless_header(frame: bytes) -> bool:
    """Whether an MPEG audio frame holds a Xing/Info or VBRI header (the first frame of an MP3
    file: FFmpeg's demuxer drops it and trims the encoder's delay and padding by it)."""
    if len(frame) < 40:
        return False
    mpeg1, mono = frame[1] >> 3 & 3 == 3, frame[3] >> 6 == 3
    at = 4 + ((17 if mono else 32) if mpeg1 else (9 if mono else 17))  # after the side info
    return frame[at:at + 4] in (b"Xing", b"Info") or frame[36:40] == b"VBRI"


class Stream:
    """One source's response while the hub reads it."""

    def __init__(self, runner: SourceRunner, response: Response, now: float):
        self.runner, self.shown = runner, redact(runner.spec.target)
        self.sock, self.http = response.sock, response.http
        self.ends_by_close = response.ends_by_close
        self.decoder = Decoder(response.kind)
        self.recording: Recording | None = None  # from the first audio
        self.due: deque[tuple[float, np.ndarray]] = deque()  # blocks not yet heard
        self.last_data = now
        self.body_bytes = 0
        self.unread = True  # and h11 may hold bytes that came with the head
        self.ended = False  # nothing more will be read
        self.failure: SourceError | None = None  # why it ended, if it failed

    def step(self, now: float, ready: bool) -> None:
        """Read what came (`ready`: the selector says so) unless the source is ahead of real
        time; hand the Recording what is due. A stream that failed (`failure`) is `done` once
        the audio it gave has been heard, as the thread path would have paced it."""
        if self.ended or (self.due and self.due[-1][0] - now >= READ_AHEAD_S):
            self.last_data = now  # not waiting for the server
        elif ready or self.unread or now - self.last_data > 1.0:  # silence is checked too
            try:
                if not self.body_bytes:  # h11 may hold the body's first bytes, come with the head
                    self._events()
                self.unread = self._read(now)
            except SourceError as exc:
                self.ended, self.failure = True, exc
        self._release(now)

    def _read(self, now: float) -> bool:
        """Read what the socket holds (up to READ_MAX); True when bytes were left unread.
        SourceError when the stream fails or stays silent for NETWORK_TIMEOUT_S."""
        received = 0
        while received < READ_MAX:
            try:
                data = self.sock.recv(READ_MAX - received)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except OSError as exc:
                raise SourceError(f"{self.shown}: {_why(exc)}") from None
            received += len(data)
            self._receive(data)
            if not data or self.ended:
                return False
        if received:
            self.last_data = now
        elif now - self.last_data > NETWORK_TIMEOUT_S:
            raise SourceError(f"{self.shown}: no data for {NETWORK_TIMEOUT_S:.0f} s")
        return received >= READ_MAX

    def _receive(self, data: bytes) -> None:
        self.http.receive_data(data)
        self._events()

    def _events(self) -> None:
        try:
            while True:
                event = self.http.next_event()
                if isinstance(event, h11.Data):
                    self._decode(bytes(event.data))
                elif event is h11.NEED_DATA:
                    return
                else:  # the body's end (EndOfMessage, ConnectionClosed)
                    self._end()
                    return
        except h11.ProtocolError as exc:
            raise SourceError(f"{self.shown}: {one_line(exc)}") from None

    def _decode(self, data: bytes) -> None:
        self._queue(self._guarded(lambda: self.decoder.samples(data)))
        self.body_bytes += len(data)
        if self.recording is None and self.body_bytes >= FIRST_AUDIO_BYTES:
            raise NotForHub(f"no audio in its first {FIRST_AUDIO_BYTES >> 10} KB")

    def _end(self) -> None:
        """The body's end: a stream that ended as announced (its length, its last chunk) is
        finished; one cut by a closed connection (a live stream's server going down) or with
        no audio is retried, as FFmpeg's reads would be."""
        self.ended = True
        self._queue(self._guarded(self.decoder.flush))
        if self.ends_by_close:  # SourceError: a failure once its audio is heard
            raise SourceError(f"{self.shown}: the server closed the stream")
        if self.recording is None:
            raise SourceError(f"{self.shown}: a response without audio")

    def _guarded(self, decode: Callable[[], list[np.ndarray]]) -> list[np.ndarray]:
        """Decoded audio; a stream that fails to decode before any audio is handed back to
        FFmpeg (NotForHub: a layer or a framing the hub does not know), later a SourceError."""
        import av

        try:
            return decode()
        except av.FFmpegError as exc:
            if self.recording is None:
                raise NotForHub(f"not decoded by the hub ({_why(exc)})") from None
            raise SourceError(f"{self.shown}: {_why(exc)}") from None

    def _queue(self, blocks: list[np.ndarray]) -> None:
        if not blocks:
            return
        if self.recording is None:
            self.recording = self.runner.recording().__enter__()
        block = np.concatenate(blocks)
        self.due.append((self.recording.arrived(len(block)), block))

    def _release(self, now: float) -> None:
        """Hand the audio heard by now to the Recording."""
        while self.due and self.due[0][0] <= now:
            self.recording.add(self.due.popleft()[1])  # type: ignore[union-attr]

    @property
    def done(self) -> bool:
        return self.ended and not self.due

    def close(self) -> None:
        """Stop reading; the Recording gets the audio received (its last chunk flagged).
        Raises what the Recording raised (a WAV copy that cannot be written), once."""
        self.sock.close()
        recording, self.recording = self.recording, None
        if recording is None:
            return
        try:
            while self.due:
                recording.add(self.due.popleft()[1])
        finally:
            self.due.clear()
            recording.__exit__(None, None, None)


class Hub:
    """The thread that reads a process's HTTP streams; `add` runners before `start`. A runner
    whose response it does not read is given to `hand_back` (which runs it in its own thread).
    `crashed` when its thread died of a bug."""

    def __init__(self, stopper: bus.Stopper, health: metrics.Health,
                 hand_back: Callable[[SourceRunner], None]):
        self.stopper, self.hand_back = stopper, hand_back
        self.crashed = False
        self._waiting: list[tuple[float, int, SourceRunner]] = []  # (when, order, runner) heap
        self._opening = 0
        self._opened: queue.SimpleQueue[tuple[SourceRunner, Response | Exception]] = (
            queue.SimpleQueue())
        # (first attempts before retries, order, runner); None stops an opener
        self._to_open: queue.PriorityQueue[tuple[int, int, SourceRunner | None]] = (
            queue.PriorityQueue())
        self._streams: dict[int, Stream] = {}  # by the socket's file descriptor
        self._selector = selectors.DefaultSelector()
        self._order = 0
        self.thread = threading.Thread(target=self._run, name="hub", daemon=True)
        health.watch(lambda: not self.crashed and (self.thread.is_alive() or not self._pending),
                     "the capture hub's thread died")
        for number in range(OPENERS):
            threading.Thread(target=self._open_loop, name=f"hub opener {number}",
                             daemon=True).start()

    def add(self, runner: SourceRunner, delay_s: float = 0.0) -> None:
        self._order += 1
        heapq.heappush(self._waiting, (time.monotonic() + delay_s, self._order, runner))

    def start(self) -> None:
        self.thread.start()

    @property
    def _pending(self) -> bool:
        return bool(self._waiting or self._opening or self._streams)

    def alive(self) -> bool:
        return self.thread.is_alive()

    def _open_loop(self) -> None:
        while True:
            runner = self._to_open.get()[2]
            if runner is None:  # the hub has stopped
                return
            try:
                result: Response | Exception = open_stream(runner.spec.target)
            except Exception as exc:
                result = exc
            self._opened.put((runner, result))

    def _run(self) -> None:
        try:
            while self._pending and not self.stopper.stopped:
                tick = time.monotonic()
                self._open_due(tick)
                self._take_opened()
                self._read(time.time())
                self.stopper.wait(TICK_S - (time.monotonic() - tick))
        except Exception:
            self.crashed = True
            log.exception("capture: the hub failed; the service stops (exit 1)")
            self.stopper.stop()  # for its supervisor to start it again
        finally:
            for stream in list(self._streams.values()):
                try:
                    self._close(stream)
                except Exception as exc:
                    log.warning("capture: %s: %s", stream.runner.spec.id, one_line(exc))
            self._selector.close()
            for _ in range(OPENERS):
                self._to_open.put((-1, 0, None))

    def _open_due(self, now: float) -> None:
        while self._waiting and self._waiting[0][0] <= now and not self.stopper.stopped:
            _, order, runner = heapq.heappop(self._waiting)
            runner.starting()
            self._opening += 1
            self._to_open.put((min(runner.failures, 1), order, runner))

    def _take_opened(self) -> None:
        while True:
            try:
                runner, result = self._opened.get_nowait()
            except queue.Empty:
                return
            self._opening -= 1
            if isinstance(result, Response):
                self._stream(runner, result)
            elif isinstance(result, NotForHub):
                self._to_ffmpeg(runner, result)
            else:
                self._failed(runner, result)

    def _stream(self, runner: SourceRunner, response: Response) -> None:
        try:
            stream = Stream(runner, response, time.time())
        except Exception as exc:  # the decoder not created
            response.sock.close()
            self._failed(runner, exc)
            return
        self._streams[response.sock.fileno()] = stream
        self._selector.register(response.sock, selectors.EVENT_READ, stream)

    def _read(self, now: float) -> None:
        ready = {key.fd for key, _ in self._selector.select(0)}
        for fd, stream in list(self._streams.items()):
            try:
                stream.step(now, fd in ready)
            except Exception as exc:  # NotForHub, SourceError, or a bug in one source's turn
                self._settle(stream, exc)
                continue
            if stream.done:
                self._settle(stream, stream.failure)

    def _settle(self, stream: Stream, outcome: Exception | None) -> None:
        """Close a stream that ended (outcome None), failed, or goes to FFmpeg (NotForHub)."""
        try:
            self._close(stream)
        except Exception as exc:  # its Recording's last writes (a WAV copy) failed
            outcome = exc if outcome is None or isinstance(outcome, NotForHub) else outcome
        if outcome is None:
            stream.runner.finished()
        elif isinstance(outcome, NotForHub):
            self._to_ffmpeg(stream.runner, outcome)
        else:
            if not isinstance(outcome, SourceError):  # a bug in this source's turn: retried
                log.error("capture: %s: unexpected error", stream.runner.spec.id,
                          exc_info=outcome)
            self._failed(stream.runner, outcome)

    def _close(self, stream: Stream) -> None:
        fd = stream.sock.fileno()
        if self._streams.pop(fd, None) is not None:
            self._selector.unregister(stream.sock)
        stream.close()

    def _to_ffmpeg(self, runner: SourceRunner, why: NotForHub) -> None:
        log.info("capture: %s: %s, read through FFmpeg", runner.spec.id, why)
        self.hand_back(runner)

    def _failed(self, runner: SourceRunner, exc: Exception) -> None:
        if isinstance(exc, SourceGone):
            runner.gone(exc)
        else:
            self.add(runner, runner.retrying(exc))
