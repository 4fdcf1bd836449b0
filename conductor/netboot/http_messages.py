"""HTTP/1.1 messages of the boot file server, without any socket: parse a request
head, judge ``Range`` and the conditional headers, format a response head.

Kept apart from the event loop (``http.py``) so every rule a client can probe is a
pure function with a unit test. Header text is ISO-8859-1, as RFC 9112 reads it:
any byte decodes, and a non-ASCII digit never passes for a number.
"""
from __future__ import annotations

import dataclasses
import email.utils
import os
import re
import time
from http import HTTPStatus
from urllib.parse import unquote, urlsplit

#: The ``Server`` header of every answer.
SERVER = "metalcast-boot"
#: Methods served; any other is a 501.
METHODS = ("GET", "HEAD")
#: Content types a boot client may care about; everything else is a byte stream.
CONTENT_TYPES = {".ipxe": "text/plain; charset=utf-8", ".cfg": "text/plain; charset=utf-8",
                 ".json": "application/json", ".txt": "text/plain; charset=utf-8"}
#: A longer request target names no file in a boot root: 414 before any file lookup.
MAX_TARGET = 2048
#: Header fields in one request head, as http.server allowed (then 431).
MAX_FIELDS = 100
#: A byte position: ASCII digits, at most 19 of them (any file size fits in 63 bits).
_POSITION_RE = re.compile(r"[0-9]{0,19}")
#: RFC 9110 token (a method or a field name).
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION_RE = re.compile(r"HTTP/([0-9])\.([0-9])")
#: The blank line that ends a head (RFC 9112 2.2: a bare LF may end a line).
HEAD_END = re.compile(rb"\r?\n\r?\n")


class BadRequest(Exception):
    """A request head this server will not serve; the answer's status and why."""

    def __init__(self, status: HTTPStatus, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclasses.dataclass(frozen=True)
class Request:
    """One parsed request head; ``fields`` maps lower-case names to the first value."""

    method: str
    target: str
    version: tuple[int, int]
    fields: dict[str, str]
    line: str                    # the request line, for the log

    def get(self, name: str) -> str | None:
        return self.fields.get(name)

    @property
    def keep_alive(self) -> bool:
        """HTTP/1.1 keeps the connection unless told; HTTP/1.0 closes unless told."""
        tokens = {t.strip().lower() for t in self.fields.get("connection", "").split(",")}
        if self.version >= (1, 1):
            return "close" not in tokens
        return "keep-alive" in tokens

    @property
    def announces_body(self) -> bool:
        """A body follows the head: a file server reads none, so the rest of the stream
        is not a next request and the connection must end after the answer."""
        return "transfer-encoding" in self.fields or \
            self.fields.get("content-length", "0").strip() not in ("", "0")


def parse_head(head: bytes) -> Request:
    """A request head (without its blank line) -> Request, or BadRequest (400/501/505/431).

    Leading empty lines are skipped (RFC 9112 2.2). A folded line (obs-fold) or a field
    name with white space before its colon is refused (RFC 9112 5.1 and 5.2): both are
    ways to smuggle a header past a proxy.
    """
    lines = head.decode("latin-1").lstrip("\r\n").split("\n")
    line = lines[0].removesuffix("\r")
    words = line.split()
    if len(words) != 3:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "a request line is METHOD TARGET VERSION")
    method, target, version_text = words
    version = _VERSION_RE.fullmatch(version_text)
    if version is None or not _TOKEN_RE.fullmatch(method):
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"bad request line {line[:100]!r}")
    major, minor = int(version.group(1)), int(version.group(2))
    if major != 1:
        raise BadRequest(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED if major > 1
                         else HTTPStatus.BAD_REQUEST, f"HTTP version {version_text} not served")
    fields = _parse_fields(lines[1:])
    if method not in METHODS:
        raise BadRequest(HTTPStatus.NOT_IMPLEMENTED, f"method {method[:20]} not served "
                                                     "(GET and HEAD only)")
    return Request(method, target, (major, minor), fields, line)


def _parse_fields(lines: list[str]) -> dict[str, str]:
    if len(lines) > MAX_FIELDS:
        raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                         f"more than {MAX_FIELDS} header fields")
    fields: dict[str, str] = {}
    for raw in lines:
        text = raw.removesuffix("\r")
        if text[:1] in (" ", "\t"):
            raise BadRequest(HTTPStatus.BAD_REQUEST, "folded header line (obs-fold)")
        name, colon, value = text.partition(":")
        if not colon or not _TOKEN_RE.fullmatch(name):
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"bad header line {text[:100]!r}")
        fields.setdefault(name.lower(), value.strip(" \t"))
    return fields


def parse_range(header: str, size: int) -> tuple[int, int] | None | str:
    """``Range`` header -> (first, last) inclusive, None (serve everything) or "416".

    Only one ``bytes`` range is honoured; several ranges or another unit are
    ignored (RFC 9110 lets a server answer those with the whole file). A ``bytes``
    range that is not two ASCII numbers of at most 19 digits, or ends before it
    starts, is refused with 416 as nginx does (RFC 9110 14.2 lets a server reject
    an invalid range).
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not _POSITION_RE.fullmatch(first) or not _POSITION_RE.fullmatch(last):
        return "416"
    if first == "":  # suffix range: the last N bytes
        if last == "" or int(last) == 0 or size == 0:
            return "416"
        return max(0, size - int(last)), size - 1
    start = int(first)
    if last != "" and int(last) < start:
        return "416"
    if start >= size:
        return "416"
    return start, size - 1 if last == "" else min(int(last), size - 1)


def target_path(target: str) -> str | None:
    """The decoded path of a request target (origin or absolute form), or None."""
    if target.startswith("/"):
        path = target.split("?", 1)[0].split("#", 1)[0]
    elif target.lower().startswith(("http://", "https://")):  # RFC 9112 3.2.2
        try:
            path = urlsplit(target).path
        except ValueError:  # e.g. a broken IPv6 literal in the authority
            return None
    else:
        return None
    return unquote(path)


def etag(st: os.stat_result) -> str:
    """Changes whenever the file is replaced (inode) or rewritten (size, mtime)."""
    return f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


def not_modified(request: Request, tag: str, mtime: float) -> bool:
    """``If-None-Match`` (weak comparison; wins when both are sent) or
    ``If-Modified-Since`` says the client's copy is current: 304."""
    if_none_match = request.get("if-none-match")
    if if_none_match is not None:
        tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
        return "*" in tags or tag in tags
    since = _parse_date(request.get("if-modified-since"))
    return since is not None and int(mtime) <= since


def wanted_range(request: Request, st: os.stat_result, tag: str) -> tuple[int, int] | None | str:
    """The request's ``Range`` (see :func:`parse_range`) unless ``If-Range`` names
    another version of the file (strong ETag comparison, or the exact date)."""
    header = request.get("range")
    if not header:
        return None
    if_range = request.get("if-range")
    if if_range is not None:
        if if_range.startswith(('"', "W/")):
            if if_range.strip() != tag:
                return None
        elif _parse_date(if_range) != int(st.st_mtime):
            return None
    return parse_range(header, st.st_size)


def _parse_date(value: str | None) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(value).timestamp() if value else None
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def http_date(when: float) -> str:
    return email.utils.formatdate(when, usegmt=True)


def response_head(status: HTTPStatus, fields: list[tuple[str, str]], close: bool,
                  keep_alive_1_0: bool = False) -> bytes:
    """Status line, ``Server``, ``Date``, the fields, and ``Connection`` when it ends
    (or, for an HTTP/1.0 client that asked, when it stays)."""
    lines = [f"HTTP/1.1 {status.value} {status.phrase}", f"Server: {SERVER}",
             f"Date: {http_date(time.time())}"]
    lines += [f"{name}: {value}" for name, value in fields]
    if close:
        lines.append("Connection: close")
    elif keep_alive_1_0:
        lines.append("Connection: keep-alive")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def file_fields(st: os.stat_result, tag: str, length: int | None,
                suffix: str = "") -> list[tuple[str, str]]:
    """The fields of an answer about a file (``length`` None: no Content-Length, 304)."""
    fields = [("Content-Type", CONTENT_TYPES.get(suffix, "application/octet-stream"))]
    if length is not None:
        fields.append(("Content-Length", str(length)))
    return fields + [("Accept-Ranges", "bytes"), ("ETag", tag),
                     ("Last-Modified", http_date(st.st_mtime))]


def error_body(status: HTTPStatus, detail: str = "") -> bytes:
    """The text of an error answer: the status, and why when it helps the client."""
    text = f"{status.value} {status.phrase}" + (f": {detail}" if detail else "")
    return (text + "\n").encode("latin-1", "replace")
