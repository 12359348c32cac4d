"""shared/redact.py: what cameras, streaming services and signed URLs carry, shown without it."""

import logging
import sys

import pytest

from shared.redact import RedactingFormatter, redact


@pytest.mark.parametrize(("url", "shown"), [
    ("rtsp://admin:S3cret@cam:554/Streaming/Channels/101",
     "rtsp://cam:554/Streaming/Channels/101"),
    ("rtsp://admin:p@ss@cam/stream", "rtsp://cam/stream"),  # an unescaped '@' in the password
    ("rtsp://cam/user=admin&password=S3cret&channel=1&stream=0.sdp",  # Xiongmai / XMEye
     "rtsp://cam/user=***&password=***&channel=1&stream=0.sdp"),
    ("http://cam/videostream.cgi?usr=admin&pwd=S3cret&resolution=32",  # Foscam
     "http://cam/videostream.cgi?usr=***&pwd=***&resolution=32"),
    ("rtmp://cam/bcs/channel0_main.bcs?channel=0&stream=0&user=admin&password=S3cret",
     "rtmp://cam/bcs/channel0_main.bcs?channel=0&stream=0&user=***&password=***"),  # Reolink
    ("http://cam/cgi?loginuse=admin&loginpas=S3cret", "http://cam/cgi?loginuse=***&loginpas=***"),
    ("https://b.s3.amazonaws.com/a.mp3?X-Amz-Credential=AK%2F1&X-Amz-Signature=ab12&X-Amz-"
     "Security-Token=Zm9v/YmFy&X-Amz-Expires=60",
     "https://b.s3.amazonaws.com/a.mp3?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-"
     "Security-Token=***&X-Amz-Expires=60"),
    ("https://x.blob.core.windows.net/c/a.wav?sv=2022&se=2030&sig=abc%2Bd",
     "https://x.blob.core.windows.net/c/a.wav?sv=2022&se=2030&sig=***"),
    ("https://cdn/live.m3u8?Policy=eyJ&Signature=aa~bb&Key-Pair-Id=K2",  # CloudFront
     "https://cdn/live.m3u8?Policy=***&Signature=***&Key-Pair-Id=***"),
    ("https://cdn/live.m3u8?hdnts=exp=1~acl=/*~hmac=ab", "https://cdn/live.m3u8?hdnts=***"),
    ("https://h/live.m3u8?wmsAuthSign=c2Vy&txSecret=f0&auth_key=1-0-0-ab&ACCESS_TOKEN=x&apikey"
     "=k&api_key=k&__token__=t&jwt=e",
     "https://h/live.m3u8?wmsAuthSign=***&txSecret=***&auth_key=***&ACCESS_TOKEN=***&apikey=***"
     "&api_key=***&__token__=***&jwt=***"),
    ("srt://relay:9000?passphrase=longsecret&streamid=#!::r=live,u=bob,s=abc&latency=200",
     "srt://relay:9000?passphrase=***&streamid=***&latency=200"),
    ("http://radio.example/live.mp3?type=.mp3&t=1", "http://radio.example/live.mp3?type=.mp3&t=1"),
])
def test_urls_lose_userinfo_and_secret_parameters(url: str, shown: str):
    assert redact(url) == shown
    assert redact(shown) == shown


def test_urls_inside_text_are_redacted_and_the_rest_is_left():
    text = ("[Errno 111] Connection refused: 'http://u:S3cret@127.0.0.1:1/x.mp3?token=T0k' "
            "(then GET /events/stream?token=T0k and 3 = 3 key=value)")
    assert redact(text) == ("[Errno 111] Connection refused: 'http://127.0.0.1:1/x.mp3?token=***' "
                            "(then GET /events/stream?token=*** and 3 = 3 key=value)")
    # The separator after a URL ending with a secret stays: "cannot open URL: reason".
    assert redact("cannot open rtsp://cam/live?token=T0k: Connection refused") == (
        "cannot open rtsp://cam/live?token=***: Connection refused")


def test_log_lines_and_their_exceptions_are_redacted():
    formatter = RedactingFormatter("%(message)s")
    try:
        raise OSError("cannot open rtsp://admin:S3cret@cam/stream")
    except OSError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "opening %s",
                                   ("http://cam/a?pwd=S3cret",), sys.exc_info())
    line = formatter.format(record)
    assert "S3cret" not in line
    assert "opening http://cam/a?pwd=***" in line and "rtsp://cam/stream" in line
