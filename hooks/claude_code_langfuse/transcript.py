"""New bytes of a transcript -> rows: incremental, complete lines only, big lines the reader never needs skipped undecoded."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

# ============================================================================ new bytes -> rows


class Row(NamedTuple):
    """One complete transcript line: where it sits in the file and what it says."""

    start: int
    end: int
    data: dict

    @property
    def type(self) -> str:
        return self.data.get("type") or ""

    @property
    def ts(self) -> str:
        return self.data.get("timestamp") or ""


READ_CHUNK = 1 << 20


# Claude Code 2.1.x writes the whole API request into the transcript (`api-request-shape`,
# `api-request-blob`: hundreds of KB per call) and big `attachment` lines. The hook needs nothing
# from them but an api-request's id and time, so large lines of those kinds are recognised by
# their first bytes and never decoded.
BIG_LINE = 4096
_SKIP_PREFIXES = (b'{"type":"api-request-shape"', b'{"type":"api-request-blob"')
_API_REQUEST_PREFIX = b'{"type":"api-request",'
_HEAD_ID_RE = re.compile(rb'"id":"([^"]{1,100})"')
_HEAD_TS_RE = re.compile(rb'"timestamp":"([^"]{1,40})"')
# big attachments are skipped, except text the user typed while Claude was working (queued_command);
# no "^": match(buf, begin) anchors at the line's start, "^" only at the buffer's
_ATTACHMENT_HEAD_RE = re.compile(
    rb'\{"parentUuid":(?:null|"[^"]{0,64}"),"isSidechain":(?:true|false),"attachment":\{(?!"type":"queued_command")'
)


_NOT_NEEDED = object()  # a blank line, or a big line of a kind the hook never reads
_PARAMS_KEY = b'"params":'
_PARAMS_WINDOW = 16384  # `params` (model, max_tokens, thinking, effort, speed) comes early; the list of message hashes after it grows


def _head_params(buf: bytes, begin: int, end: int) -> dict:
    """{"params": {...}} of a big api-request line, decoded from its first bytes only; {} if not there."""
    at = buf.find(_PARAMS_KEY, begin, min(end, begin + _PARAMS_WINDOW))
    if at < 0:
        return {}
    window = buf[at + len(_PARAMS_KEY) : min(end, at + _PARAMS_WINDOW)].decode("utf-8", "replace").lstrip()
    try:
        params, _ = json.JSONDecoder().raw_decode(window)
    except (ValueError, RecursionError):
        return {}
    return {"params": params} if isinstance(params, dict) else {}


def _decode_line(buf: bytes, begin: int, end: int) -> Any:
    """The JSON object of buf[begin:end], or a stand-in for the big lines the hook never needs."""
    if end - begin > BIG_LINE:
        if buf.startswith(_SKIP_PREFIXES, begin) or _ATTACHMENT_HEAD_RE.match(buf, begin):
            return _NOT_NEEDED  # not even copied out of the buffer
        if buf.startswith(_API_REQUEST_PREFIX, begin):
            head = buf[begin : begin + 512]
            rid, ts = _HEAD_ID_RE.search(head), _HEAD_TS_RE.search(head)
            if rid and ts:
                return {
                    "type": "api-request",
                    "id": rid.group(1).decode(),
                    "timestamp": ts.group(1).decode(),
                    **_head_params(buf, begin, end),
                }
    line = buf[begin:end]
    if not line or line.isspace():
        return _NOT_NEEDED
    try:
        return json.loads(line)
    except UnicodeDecodeError:
        pass  # a stray invalid byte: decoded below as U+FFFD, so the line (a prompt, say) is kept
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's parser goes
        return None
    try:
        return json.loads(line.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None


def iter_rows(f, start: int, stop: int | None = None, bad_lines: list | None = None) -> Iterator[Row]:
    """Complete JSON lines of an open binary file from byte `start` (up to `stop`).

    A last line without its newline is still being written: it is not yielded, so the caller's
    offset stays before it. Lines that are not JSON objects are skipped (and counted).
    """
    f.seek(start)
    pos = start  # file offset of buf[0]
    buf = b""
    while True:
        want = READ_CHUNK if stop is None else min(READ_CHUNK, stop - pos - len(buf))
        if want <= 0:
            break
        chunk = f.read(want)
        if not chunk:
            break
        buf = buf + chunk if buf else chunk
        i = 0
        while True:
            nl = buf.find(b"\n", i)  # scan by index: re-slicing the rest per line is quadratic
            if nl < 0:
                break
            begin, line_start, i = i, pos + i, nl + 1
            obj = _decode_line(buf, begin, nl)
            if obj is _NOT_NEEDED:
                continue
            if isinstance(obj, dict):
                yield Row(line_start, pos + i, obj)
            elif bad_lines is not None:
                bad_lines.append(line_start)
        buf = buf[i:]
        pos += i


def read_all_rows(path: str) -> list[Row]:
    try:
        with open(path, "rb") as f:
            return list(iter_rows(f, 0))
    except OSError:
        return []
