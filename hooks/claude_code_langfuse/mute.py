"""Muted sessions and purging one session: `mute`, `unmute`, `purge --session` (and the worker's check).

A muted session is traced no further: the worker moves its cursor past what the transcript holds
without queueing anything (as with TRACE_TO_LANGFUSE=false), so unmuting never uploads what was
said meanwhile. The list lives in `<state>/muted_sessions.json` ({session id: {"muted_at", "cwd"}}).

`purge --session ID` mutes the session, drops its waiting hook events, queued records and dead
letters, and deletes its traces from Langfuse (public API: the trace ids of the session from
GET /api/public/v2/observations?sessionId=, plus the ids this machine queued or cursored, then
DELETE /api/public/traces {"traceIds": [...]}).
"""

from __future__ import annotations

import json
import os
import sys

from .config import LOCK_TIMEOUT_S, Settings, display_url, ensure_state_dir, load_settings
from .facts import facts_path, queued_path
from .files import FileLock, LockTimeout, Paths, read_json_file, write_atomic
from .inbox import list_news, read_news, remove_news
from .store import load_state, now_iso, queue_read

MUTED_FILE = "muted_sessions.json"
DELETE_CHUNK = 100  # trace ids per bulk DELETE
MAX_PAGES = 1000  # observation pages read per purge (1000 observations each), a bound against a looping cursor


def muted_path(state_dir: str) -> str:
    return os.path.join(state_dir, MUTED_FILE)


def load_muted(state_dir: str) -> dict:
    """{session id: info} of the muted sessions; {} when none (or the file is unreadable: then nothing is muted)."""
    data = read_json_file(muted_path(state_dir), {})
    sessions = data.get("sessions") if isinstance(data, dict) else None
    return {k: v if isinstance(v, dict) else {} for k, v in sessions.items() if isinstance(k, str)} if isinstance(sessions, dict) else {}


def is_muted(state_dir: str, session_id: str) -> bool:
    if not os.path.exists(muted_path(state_dir)):
        return False
    return session_id in load_muted(state_dir)


def set_muted(state_dir: str, session_id: str, muted: bool, cwd: str = "") -> bool:
    """Add or remove one session; True when that changed something."""
    ensure_state_dir(state_dir)
    with FileLock(os.path.join(state_dir, "locks", "muted.lock"), timeout=LOCK_TIMEOUT_S):
        sessions = load_muted(state_dir)
        if muted == (session_id in sessions):
            return False
        if muted:
            sessions[session_id] = {"muted_at": now_iso(), **({"cwd": cwd} if cwd else {})}
        else:
            sessions.pop(session_id, None)
        write_atomic(muted_path(state_dir), json.dumps({"sessions": sessions}, indent=1).encode())
        return True


def current_session(settings: Settings) -> tuple[str, str]:
    """The session `--current` means: CLAUDE_CODE_SESSION_ID (Claude Code 2.1.132+ sets it for the
    commands it runs), else the session with the newest hook event in this folder. ("", why) if none."""
    sid = os.environ.get("CLAUDE_CODE_SESSION_ID") or ""
    if sid:
        return sid, "CLAUDE_CODE_SESSION_ID"
    here = os.path.realpath(os.getcwd())
    best, best_time = "", -1.0
    for entry in load_state(Paths(settings.state_dir))["transcripts"].values():
        cwd = entry.get("cwd")
        if isinstance(cwd, str) and cwd and os.path.realpath(cwd) == here and isinstance(entry.get("session_id"), str):
            updated = float(entry.get("updated_epoch") or 0) if isinstance(entry.get("updated_epoch"), (int, float)) else 0.0
            if updated > best_time:
                best, best_time = entry["session_id"], updated
    if best:
        return best, f"the newest session traced in {here}"
    return "", f"no CLAUDE_CODE_SESSION_ID and no session traced in {here}; pass the session id (Claude Code's /status shows it)"


def _session_arg(settings: Settings, session_id: str | None, current: bool) -> str:
    if current or not session_id:
        sid, how = current_session(settings)
        if not sid:
            print(f"which session? {how}", file=sys.stderr)
            return ""
        print(f"session {sid} ({how})", file=sys.stderr)
        return sid
    return session_id.strip()


def cmd_mute(settings: Settings, session_id: str | None, current: bool, mute: bool = True) -> int:
    if not settings.state_dir:
        print(f"no state folder: {settings.config_error}", file=sys.stderr)
        return 1
    sid = _session_arg(settings, session_id, current)
    if not sid:
        return 2
    try:
        changed = set_muted(settings.state_dir, sid, mute, os.getcwd() if mute else "")
    except (OSError, LockTimeout) as e:
        print(f"could not {'mute' if mute else 'unmute'} {sid}: {e}", file=sys.stderr)
        return 1
    if mute:
        print(
            f"muted session {sid}"
            + ("" if changed else " (it already was)")
            + ": its turns from now on are not traced (`unmute` traces its later turns; what was said meanwhile is never sent)"
        )
    else:
        print(f"unmuted session {sid}" + ("" if changed else " (it was not muted)") + ": its next turns are traced")
    return 0


# ============================================================================ purge


def _record_session(record: dict) -> str:
    trace = record.get("trace") if isinstance(record, dict) else None
    return trace.get("session_id") or "" if isinstance(trace, dict) else ""


def drop_local(paths: Paths, session_id: str) -> tuple[int, int, int, set]:
    """Remove the session's waiting hook events, queued records, dead letters and filed facts.
    Returns (events, records, dead letters, trace ids seen in them)."""
    from .records import trace_id_for

    trace_ids: set = set()
    events = 0
    for name in list_news(paths.inbox):
        path = os.path.join(paths.inbox, name)
        news = read_news(path)
        if news is not None and news["event"].get("session_id") == session_id:
            remove_news(path)
            events += 1
    records = dead = 0
    with FileLock(paths.queue_lock, timeout=30):
        entries = queue_read(paths.queue)
        keep = []
        for e in entries:
            if e.record is not None and _record_session(e.record) == session_id:
                records += 1
                trace_ids.add(e.record["trace"].get("id"))
                continue
            keep.append(e.raw if e.raw.endswith(b"\n") else e.raw + b"\n")
        if records:
            write_atomic(paths.queue, b"".join(keep))
        try:
            with open(paths.dead, "rb") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            lines = []
        kept = []
        for line in lines:
            try:
                d = json.loads(line)
            except ValueError:
                d = None
            if isinstance(d, dict) and (d.get("session_id") == session_id or _record_session(d.get("record") or {}) == session_id):
                dead += 1
                trace_ids.add(d.get("trace_id") or ((d.get("record") or {}).get("trace") or {}).get("id"))
                continue
            if line.strip():
                kept.append(line + b"\n")
        if dead:
            write_atomic(paths.dead, b"".join(kept))
    for entry in load_state(paths)["transcripts"].values():  # the turns this machine read (and may have sent)
        if entry.get("session_id") == session_id:
            trace_ids.update(trace_id_for(session_id, key) for key in (entry.get("emitted") or {}))
    for path in (facts_path(paths, session_id), queued_path(paths, session_id)):  # tool names, errors, agent ids, times
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return events, records, dead, {t for t in trace_ids if isinstance(t, str) and t}


class PurgeError(Exception):
    pass


def server_trace_ids(http, base_url: str, session_id: str) -> set:
    """Every trace id Langfuse holds for the session (observations API v2, cursor paging)."""
    ids: set = set()
    cursor = None
    for _ in range(MAX_PAGES):
        params = {"sessionId": session_id, "fields": "core", "limit": 1000}
        if cursor:
            params["cursor"] = cursor
        response = http.get(base_url + "/api/public/v2/observations", params=params)
        _check(response, base_url, "list the session's traces")
        body = response.json()
        for row in body.get("data") or []:
            if isinstance(row, dict) and isinstance(row.get("traceId"), str):
                ids.add(row["traceId"])
        cursor = (body.get("meta") or {}).get("cursor")
        if not cursor or not body.get("data"):
            break
    return ids


def delete_traces(http, base_url: str, trace_ids: list) -> None:
    for i in range(0, len(trace_ids), DELETE_CHUNK):
        chunk = trace_ids[i : i + DELETE_CHUNK]
        response = http.request("DELETE", base_url + "/api/public/traces", json={"traceIds": chunk})
        if response.status_code in (404, 405) and len(chunk) == 1:
            response = http.delete(base_url + f"/api/public/traces/{chunk[0]}")
        _check(response, base_url, "delete traces")


def _check(response, base_url: str, what: str) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    said = " ".join(response.text.split())[:200]
    if status in (401, 403):
        raise PurgeError(
            f"Langfuse at {base_url} refused to {what} (HTTP {status}: {said}); check CC_LANGFUSE_PUBLIC_KEY / CC_LANGFUSE_SECRET_KEY"
        )
    raise PurgeError(f"Langfuse at {base_url} could not {what} (HTTP {status}: {said})")


def _wake_for_waiting_events(paths: Paths, settings: Settings) -> None:
    """Hook events of other sessions that came while purge held the worker lock found no worker to
    start (it looked busy): start one now, so they do not wait for the next event."""
    try:
        if list_news(paths.inbox) and load_settings().state_dir == paths.dir:  # the worker reads our environment
            from .config import LazyLog
            from .runtime import wake_worker

            wake_worker(paths, LazyLog(settings))
    except Exception:  # never fail the purge over it: the next hook event starts the worker anyway
        pass


def cmd_purge(settings: Settings, session_id: str) -> int:
    """Mute the session, drop what waits locally, delete its traces in Langfuse."""
    session_id = (session_id or "").strip()
    if not session_id:
        print("purge needs --session ID", file=sys.stderr)
        return 2
    if not settings.state_dir:
        print(f"no state folder: {settings.config_error}", file=sys.stderr)
        return 1
    os.umask(0o077)
    paths = Paths(settings.state_dir)
    ensure_state_dir(paths.dir)
    set_muted(paths.dir, session_id, True, os.getcwd())  # first: nothing of it is queued from now on
    print(f"muted session {session_id} (`unmute {session_id}` traces its later turns again)")
    lock = FileLock(paths.worker_lock, timeout=60)
    if not lock.acquire():  # a worker could be sending one of its records right now
        print("the background worker is busy for over 60 s; run `purge` again in a minute", file=sys.stderr)
        return 1
    try:
        events, records, dead, trace_ids = drop_local(paths, session_id)
        print(f"dropped {events} waiting hook event(s), {records} queued record(s) and {dead} dead letter(s) of the session")
        if not settings.has_keys:
            print("not deleted in Langfuse: no keys (CC_LANGFUSE_PUBLIC_KEY / CC_LANGFUSE_SECRET_KEY)", file=sys.stderr)
            return 1
        import httpx

        base = settings.base_url.rstrip("/")
        try:
            with httpx.Client(auth=(settings.public_key, settings.secret_key), timeout=settings.timeout) as http:
                found = server_trace_ids(http, base, session_id)
                targets = sorted(found | trace_ids)
                if targets:
                    delete_traces(http, base, targets)
        except PurgeError as e:
            print(f"{e}; the local part is done, run `purge --session {session_id}` again", file=sys.stderr)
            return 1
        except httpx.HTTPError as e:
            print(
                f"cannot reach Langfuse at {display_url(base)} ({type(e).__name__}: {e}); the local part is done, "
                f"run `purge --session {session_id}` again",
                file=sys.stderr,
            )
            return 1
    finally:
        lock.release()
        _wake_for_waiting_events(paths, settings)
    print(
        f"asked Langfuse at {display_url(base)} to delete {len(targets)} trace(s) of session {session_id} "
        f"({len(found)} found on the server); Langfuse deletes in the background, so they may show for a few minutes"
    )
    return 0
