"""Secrets out of everything shown: `redact(text)` removes the userinfo (user:password@) of
every URL in a text and masks the value of every secret-looking parameter, in a query
(?token=...), in a path (cameras' /user=admin&password=...&channel=1.sdp) or a fragment. Used
for source ids derived from URLs, error messages that name a URL (FFmpeg's among them), and
every service's log lines (`RedactingFormatter`). `where(url)` is a URL reduced to scheme,
host, port and path, as sinks name their servers in statuses and logs.

A parameter is secret when its name (any case, without '-', '_', '.') contains one of
SECRET_PARTS (access_token, X-Amz-Signature, Key-Pair-Id, wmsAuthSign, txSecret, passphrase...)
or is one of SECRET_NAMES (short or odd ones cameras and CDNs use). A secret elsewhere, such
as a stream key as a path segment, is not recognised: name such a source.
"""

import logging
import re
from urllib.parse import SplitResult, unquote, urlsplit

MASK = "***"
SECRET_PARTS = ("token", "key", "pass", "pwd", "secret", "auth", "sig", "credential",
                "session", "hash", "hmac", "jwt", "ticket", "otp")
SECRET_NAMES = frozenset({
    "u", "p", "pw", "psw", "user", "usr", "username", "login", "loginuse", "loginpas",  # cameras
    "account", "hdnts", "hdnea", "policy", "streamid",  # Akamai, CloudFront, SRT
})
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s'\"<>]*@")
# A value runs to the next '&' or ';': '/', '?', '#' and ',' may be part of a secret (base64,
# SRT stream ids).
_PARAMETER = re.compile(r"(?<=[/?&;#])([A-Za-z0-9_.%~-]+)=([^\s&;'\"<>]*)")


def is_secret_name(name: str) -> bool:
    key = re.sub(r"[-_.]", "", unquote(name).lower())
    return key in SECRET_NAMES or any(part in key for part in SECRET_PARTS)


def redact(text: str) -> str:
    """`text` (a URL, a log line, an error message) without URL userinfo and with the values
    of secret parameters replaced by MASK."""
    return _mask_parameters(_USERINFO.sub(r"\1", text))


def _mask_parameters(text: str) -> str:
    return _PARAMETER.sub(_mask_parameter, text)


def _mask_parameter(match: re.Match) -> str:
    name, value = match[1], match[2]
    if value and is_secret_name(name):
        # A ':' ending the value is a message's separator ("cannot open URL: reason").
        return f"{name}={MASK}" + (":" if value.endswith(":") else "")
    # A value runs wide (see _PARAMETER): the parameters it swallowed (channel=1?token=...).
    return f"{name}={_mask_parameters(value)}"


class RedactingFormatter(logging.Formatter):
    """Log lines, exceptions included, with `redact` applied: no library's message (an HTTP
    client logging the URL it calls, FFmpeg's errors) shows a secret."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def where(url: str) -> str:
    """A URL as logs, errors and the api show it: no user, password or query (they may be
    secrets)."""
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{_port(parts)}' if _port(parts) else ''}{parts.path}"


def _port(parts: SplitResult) -> int | None:
    """The URL's explicit port; None when it has none or an invalid one."""
    try:
        return parts.port
    except ValueError:
        return None
