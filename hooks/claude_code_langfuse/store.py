"""The queue (JSONL, fsynced before the cursor moves), dead letters and the per-transcript read cursors."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import time
from typing import NamedTuple

from .files import FileLock, Paths, read_json_file, write_all, write_atomic
from .redaction import EncodedRecord, json_bytes, record_rev, scrub_surrogates
from .turns import iso_ms


def now_iso() -> str:
    return iso_ms(_dt.datetime.now(_dt.UTC))


# ============================================================================ queue


def json_line(obj) -> bytes:
    """One compact JSON line in UTF-8. Never raises on a lone surrogate ("\\ud83d" is valid JSON
    but not UTF-8): such text is written as U+FFFD, so one bad character never stops a writer."""
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        return json.dumps(scrub_surrogates(obj), ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def _append_lines(path: str, lines: list[bytes]) -> None:
    """Append whole lines, fsynced; on failure (disk full) cut back so no half line remains."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        size = os.fstat(fd).st_size
        prefix = b""
        if size:
            os.lseek(fd, size - 1, os.SEEK_SET)
            if os.read(fd, 1) != b"\n":
                prefix = b"\n"  # a crash left a half line: never glue a record to it
        data = prefix + b"".join(lines)
        try:
            write_all(fd, data)
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)


def queue_append(paths: Paths, records: list[dict], lock_timeout: float = 2.0) -> None:
    """Append records to the queue. The hook waits for the queue lock briefly: on a timeout its
    cursor does not move and the next run queues the same turns, so Claude Code never waits long."""
    if not records:
        return
    stamp = now_iso()
    lines = [record_line(r, stamp) for r in records]
    with FileLock(paths.queue_lock, timeout=lock_timeout):
        _append_lines(paths.queue, lines)


def record_line(record: dict, stamp: str) -> bytes:
    """The record's queue line: its fields (keys sorted, compact), its observations (for an
    EncodedRecord the bytes its rev was hashed from, not encoded again), then queued_at and rev
    last. queue_read reads it as one JSON object like any other line."""
    rev = record.get("rev") or record_rev(record)
    obs = record.get("observations")
    if not isinstance(obs, list):
        return json_line(dict(record, queued_at=stamp, rev=rev))
    encoded = record.encoded if isinstance(record, EncodedRecord) else json_bytes
    head = json_bytes({k: v for k, v in record.items() if k not in ("observations", "queued_at", "rev")})
    tail = json_bytes({"queued_at": stamp, "rev": rev})
    parts = [head[:-1], b"," if len(head) > 2 else b"", b'"observations":[', b",".join(encoded(o) for o in obs), b"],", tail[1:], b"\n"]
    return b"".join(parts)


class QueueEntry(NamedTuple):
    line_no: int
    raw: bytes
    record: dict | None
    error: str = ""


def queue_has_record(path: str) -> bool:
    """Does the queue hold at least one record? Reads only up to the first one (the worker asks
    this often; a big backlog must not be parsed whole each time). OSError propagates."""
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.endswith(b"\n") and line.strip():
                    try:
                        rec = json.loads(line.decode("utf-8", "replace"))
                    except ValueError:
                        continue
                    if isinstance(rec, dict) and "key" in rec and "observations" in rec and "trace" in rec:
                        return True
    except FileNotFoundError:
        pass
    return False


def queue_read(path: str) -> list[QueueEntry]:
    entries = []
    try:
        with open(path, "rb") as f:
            for i, line in enumerate(f):
                if not line.strip():
                    continue
                if not line.endswith(b"\n"):
                    # an append is in flight or was cut by a crash; the next read decides
                    entries.append(QueueEntry(i, line, None, "incomplete last line"))
                    continue
                try:
                    text = line.decode("utf-8", "replace")  # a damaged byte costs a character, not the record
                    rec = json.loads(text)
                    if "\\ud" in text or "\\uD" in text:
                        # an escaped lone surrogate (a queue written by other means): the OTLP
                        # encoder would silently drop every attribute holding one
                        rec = scrub_surrogates(rec)
                    if not isinstance(rec, dict) or "key" not in rec or "observations" not in rec or "trace" not in rec:
                        raise ValueError("not a trace record")
                    entries.append(QueueEntry(i, line, rec))
                except ValueError as e:
                    entries.append(QueueEntry(i, line, None, f"corrupt queue line: {e}"))
    except FileNotFoundError:
        pass
    return entries


def queue_remove(paths: Paths, done: dict[str, str], dead: list[dict]) -> int:
    """Rewrite the queue without delivered records (and older versions of them) and moved-out lines.

    `done` maps record key -> rev delivered. Lines appended since the sender read the queue stay.
    """
    with FileLock(paths.queue_lock, timeout=30):
        if dead:
            _append_lines(paths.dead, [json_line(d) for d in dead])
        dead_raw = {d.get("raw") for d in dead if d.get("raw")}
        entries = queue_read(paths.queue)
        last_index: dict[str, int] = {}
        for idx, e in enumerate(entries):
            if e.record is not None and done.get(e.record["key"]) == e.record.get("rev"):
                last_index[e.record["key"]] = idx
        keep: list[bytes] = []
        removed = 0
        for idx, e in enumerate(entries):
            if e.record is not None and e.record["key"] in last_index and idx <= last_index[e.record["key"]]:
                removed += 1
                continue
            if e.record is None and e.raw.decode("utf-8", "replace") in dead_raw:
                removed += 1
                continue
            keep.append(e.raw if e.raw.endswith(b"\n") else e.raw + b"\n")
        if removed:
            write_atomic(paths.queue, b"".join(keep))
        return removed


UNREADABLE_TURN = "unreadable-turn"  # dead letter `kind` of a turn that could not be made into a record


def dead_append(paths: Paths, letters, lock_timeout: float = 2.0) -> None:
    """Add dead letters (fsynced), e.g. turns the reader had to skip: where they are and why."""
    if letters:
        with FileLock(paths.queue_lock, timeout=lock_timeout):
            _append_lines(paths.dead, [json_line(d) for d in letters])


# ============================================================================ state


def state_key(session_id: str, path: str) -> str:
    return hashlib.sha256(f"{session_id}::{path}".encode("utf-8", "surrogatepass")).hexdigest()[:24]


def load_state(paths: Paths) -> dict:
    data = read_json_file(paths.state, {})
    if not isinstance(data, dict) or not isinstance(data.get("transcripts"), dict):
        data = {"version": 1, "transcripts": {}}
    data["transcripts"] = {k: v for k, v in data["transcripts"].items() if isinstance(v, dict)}  # a hand-edited file: never crash on it
    return data


def update_state_entry(paths: Paths, key: str, entry: dict) -> None:
    """Read-modify-write of one transcript's entry under the state lock (other sessions untouched)."""
    with FileLock(paths.state_lock, timeout=10):
        data = load_state(paths)
        data["transcripts"][key] = entry
        cutoff = time.time() - 30 * 86400
        data["transcripts"] = {k: v for k, v in data["transcripts"].items() if v.get("updated_epoch", time.time()) >= cutoff}
        try:
            body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        except UnicodeEncodeError:  # a lone surrogate in a turn key or path: escaped, so it reads back exactly
            body = json.dumps(data, separators=(",", ":")).encode()
        write_atomic(paths.state, body)


MAX_EMITTED = 400
