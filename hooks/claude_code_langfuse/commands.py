"""`status` and `drain`: what the queue, the inbox and the worker are doing, and sending now in the foreground."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import sys
import time
from typing import Any

from .config import Settings, display_url, ensure_state_dir, get_logger
from .delivery import NOKEYS_ADVICE, DrainSummary, drain_queue, load_delivered, read_sender_status, superseded_by_delivered
from .files import FileLock, LockTimeout, Paths, access_advice, write_atomic
from .inbox import list_news
from .mute import load_muted
from .records import THINKING_SUMMARIES_ADVICE
from .runtime import ENTRY, self_command
from .store import UNREADABLE_TURN, _append_lines, load_state, now_iso, queue_read
from .turns import parse_ts
from .worker import NO_SELF_RETRY_KINDS, news_retry_epoch, process_inbox

# ============================================================================ status, drain, doctor


def _age(epoch_or_iso: Any) -> str:
    if not epoch_or_iso:
        return "never"
    try:
        t = parse_ts(epoch_or_iso) if isinstance(epoch_or_iso, str) else _dt.datetime.fromtimestamp(float(epoch_or_iso), _dt.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        t = None
    if t is None:
        return str(epoch_or_iso)
    secs = max(0, int((_dt.datetime.now(_dt.UTC) - t).total_seconds()))
    if secs < 90:
        ago = f"{secs} s ago"
    elif secs < 5400:
        ago = f"{secs // 60} min ago"
    elif secs < 172800:
        ago = f"{secs // 3600} h ago"
    else:
        ago = f"{secs // 86400} days ago"
    return f"{t.strftime('%Y-%m-%d %H:%M:%S')} UTC ({ago})"


def _last_log_problem(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            tail = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    for line in reversed(tail):
        if " ERROR " in line or " WARNING " in line:
            return line.strip()
    return ""


def _mask_key(key: str) -> str:
    return (key[:9] + "…") if key else "(not set)"


def _readable_problem(path: str) -> str:
    """Empty when `path` is missing or readable; else why not, and the way out."""
    try:
        with open(path, "rb"):
            return ""
    except FileNotFoundError:
        return ""
    except OSError as e:
        return access_advice(path, e)


def worker_running(paths: Paths) -> bool | None:
    """Whether a worker holds the worker lock (None: the lock cannot be probed)."""
    if not os.path.isdir(paths.locks):
        return False
    lock = FileLock(paths.worker_lock, timeout=0)
    try:
        if lock.acquire(blocking=False):
            lock.release()
            return False
    except OSError:
        return None
    return True


def next_try(sender: dict, queue_turns: int, running: bool | None) -> dict | None:
    """When the queue is tried again, as `status` tells it: a running worker retries a failure that
    waiting can mend by itself at the end of the back-off (worker.self_retry_epoch); otherwise the
    first hook event retries once the last try is RETRY_ON_NEWS_S old (or the back-off is over)."""
    err = sender.get("last_error")
    if not queue_turns:
        return None
    until = float(sender.get("next_attempt_epoch") or 0)
    if running and err and err.get("kind") not in NO_SELF_RETRY_KINDS and until > time.time() + 0.5:
        return {
            "epoch": until,
            "text": f"by the running worker at {_age(until).split(' (')[0]} (it retries by itself with back-off), or now: `{self_command()} drain`",
        }
    if running:
        return {"epoch": time.time(), "text": "now (a worker is running)"}
    if not err:
        return {"epoch": time.time(), "text": f"at the next Claude Code event, or now: `{self_command()} drain`"}
    due = news_retry_epoch(sender) if err.get("kind") in ("retry", "auth") else time.time()
    when = "at the next Claude Code event" + (f" from {_age(due).split(' (')[0]} on" if due > time.time() + 0.5 else "")
    return {"epoch": due, "text": f"{when}, or now: `{self_command()} drain`"}


def bootstrap_warning(err: dict) -> str:
    """The plugin's failed first-use setup: what, why, how to fix it, when it is tried again."""
    python = str(err.get("python") or "python3").split(" ")[0]
    due = err.get("next_attempt_epoch")
    when = f"from {_age(due).split(' (')[0]} on" if isinstance(due, (int, float)) and due > time.time() else "now"
    data = str(err.get("plugin_data") or "")
    by_hand = (
        f"`{'CLAUDE_PLUGIN_DATA=' + shlex.quote(data) + ' ' if data else ''}{shlex.quote(python)} -I {shlex.quote(ENTRY)} bootstrap --now`"
    )
    retry = (
        f"it is tried again at the next Claude Code event {when}, or now: {by_hand}"
        if err.get("kind") != "python"
        else "it is tried again with the next Claude Code event once `python3` is new enough"
    )
    return (
        f"the plugin's first-use setup failed ({err.get('kind')}, {err.get('failures') or 1} time(s), last {_age(err.get('time'))}): "
        f"{err.get('detail')}. Fix: {err.get('advice')}. Then {retry}"
    )


THINKING_RECENT_S = 7 * 86400


def thinking_omitted_sessions(state: dict, now: float | None = None) -> list[str]:
    """Sessions of the last 7 days whose thinking blocks all came without text (newest first):
    the worker notes per transcript whether it saw thinking with and without text."""
    now = time.time() if now is None else now
    seen: dict[str, list] = {}
    for entry in state["transcripts"].values():
        thinking = entry.get("thinking")
        sid = entry.get("session_id")
        if not isinstance(thinking, dict) or not isinstance(sid, str):
            continue
        try:
            at = float(thinking.get("at") or 0)
        except (TypeError, ValueError):
            continue
        s = seen.setdefault(sid, [False, False, 0.0])
        s[0] |= bool(thinking.get("omitted"))
        s[1] |= bool(thinking.get("shown"))
        s[2] = max(s[2], at)
    found = [(at, sid) for sid, (omitted, shown, at) in seen.items() if omitted and not shown and now - at <= THINKING_RECENT_S]
    return [sid for _, sid in sorted(found, reverse=True)]


def collect_status(settings: Settings) -> dict:
    paths = Paths(settings.state_dir)
    warnings = []
    try:
        entries = queue_read(paths.queue)
    except OSError as e:
        entries = []
        warnings.append(access_advice(paths.queue, e))
    records = [e.record for e in entries if e.record is not None]
    keys = {r["key"] for r in records}
    oldest = min((r.get("queued_at") or "" for r in records if isinstance(r.get("queued_at"), str)), default="")
    dead_count = dead_turns = 0
    turn_mark = b'"kind":"%s"' % UNREADABLE_TURN.encode()
    try:
        with open(paths.dead, "rb") as f:
            for line in f:
                if line.strip():
                    dead_count += 1
                    dead_turns += turn_mark in line
    except FileNotFoundError:
        pass
    except OSError as e:
        warnings.append(access_advice(paths.dead, e))
    try:
        queue_bytes = os.path.getsize(paths.queue)
    except OSError:
        queue_bytes = 0
    sender, problem = read_sender_status(paths)
    if problem:
        warnings.append(problem)
    running = worker_running(paths)
    if running is None:
        warnings.append(access_advice(paths.worker_lock, PermissionError(13, "Permission denied")))
    problem = _readable_problem(paths.state)
    if problem:
        warnings.append(problem)
    state = load_state(paths)
    sessions = {v.get("session_id") for v in state["transcripts"].values() if isinstance(v, dict) and isinstance(v.get("session_id"), str)}
    no_thinking = thinking_omitted_sessions(state)
    if no_thinking:
        warnings.append(
            f"thinking text is empty in {len(no_thinking)} recent session(s) (latest {no_thinking[0]}): Claude Code records "
            f"thinking only when thinking summaries are on; to trace them, {THINKING_SUMMARIES_ADVICE}"
        )
    if queue_bytes > settings.queue_warn_bytes:
        warnings.append(
            f"the queue is {queue_bytes / 1048576:.2f} MB (over {settings.queue_warn_bytes / 1048576:g} MB): "
            "Langfuse has not taken traces for a while; nothing is dropped, but check the last error"
        )
    if dead_count > dead_turns:
        warnings.append(f"{dead_count - dead_turns} dead letter(s) in {paths.dead}: `drain --retry-dead` sends them again")
    if dead_turns:
        warnings.append(
            f"{dead_turns} turn(s) could not be made into traces and were skipped (the rest of their sessions is traced): "
            f"which and why in {paths.dead} (kind {UNREADABLE_TURN}), details in the log; please report the error"
        )
    try:
        inbox = len(list_news(paths.inbox))
    except OSError as e:
        inbox = 0
        warnings.append(access_advice(paths.inbox, e))
    setup = sender.get("bootstrap_error")
    if setup:
        warnings.append(bootstrap_warning(setup))
    if inbox and not running:
        warnings.append(f"{inbox} hook event(s) wait in {paths.inbox} with no worker running: `drain` reads them now")
    if settings.config_error:
        warnings.append(settings.config_error)
    if not settings.has_keys:
        warnings.append(NOKEYS_ADVICE)
    return {
        "enabled": settings.enabled,
        "base_url": display_url(settings.base_url),
        "public_key": _mask_key(settings.public_key),
        "secret_key_set": bool(settings.secret_key),
        "config_path": settings.config_path,
        "state_dir": settings.state_dir,
        "queue_records": len(records),
        "queue_turns": len(keys),
        "queue_bytes": queue_bytes,
        "queue_oldest": oldest or None,
        "queue_corrupt_lines": sum(1 for e in entries if e.record is None and e.error != "incomplete last line"),
        "dead_letters": dead_count,
        "unreadable_turns": dead_turns,
        "last_success": sender.get("last_success"),
        "last_error": sender.get("last_error"),
        "last_attempt_epoch": sender.get("last_attempt_epoch") or 0,
        "bootstrap_error": sender.get("bootstrap_error"),
        "next_attempt_epoch": sender.get("next_attempt_epoch") or 0,
        "next_try": next_try(sender, len(keys), running),
        "sent_total": sender.get("sent_total") or 0,
        "worker_running": bool(running),
        "sender_running": bool(running),
        "inbox_events": inbox,
        "sessions_tracked": len(sessions),
        "thinking_omitted_sessions": no_thinking,
        "muted_sessions": sorted(load_muted(settings.state_dir)) if settings.state_dir else [],
        "last_log_problem": _last_log_problem(paths.log),
        "log": paths.log,
        "warnings": warnings,
    }


def format_status(st: dict) -> str:
    err = st["last_error"]
    rows = [
        ("Langfuse", f"{st['base_url']}  (public key {st['public_key']}, secret {'set' if st['secret_key_set'] else 'NOT SET'})"),
        ("Tracing", "on" if st["enabled"] else "off (TRACE_TO_LANGFUSE=false)"),
        (
            "Queue",
            f"{st['queue_turns']} trace(s) waiting, {st['queue_bytes'] / 1024:.1f} KB"
            + (f", oldest queued {_age(st['queue_oldest'])}" if st["queue_oldest"] else ""),
        ),
        ("Dead letters", str(st["dead_letters"])),
        ("Last success", _age(st["last_success"])),
        ("Last error", "none" if not err else f"{_age(err.get('time'))}: {err.get('advice') or err.get('detail')}"),
        *([("Next try", st["next_try"]["text"])] if st.get("next_try") and err else []),
        (
            "Sessions",
            f"{st['sessions_tracked']} tracked" + (f", muted: {', '.join(st['muted_sessions'])}" if st.get("muted_sessions") else ""),
        ),
        ("Worker", ("running" if st["worker_running"] else "idle") + f", {st['inbox_events']} hook event(s) not read yet"),
        ("Log", st["log"] + (f"\n{'':16}last problem: {st['last_log_problem']}" if st["last_log_problem"] else "")),
    ]
    out = ["claude-code-langfuse status"] + [f"  {k:<14}{v}" for k, v in rows]
    out += [f"  WARNING: {w}" for w in st["warnings"]]
    return "\n".join(out)


def cmd_status(settings: Settings, as_json: bool) -> int:
    if not settings.state_dir:  # nothing to look at, and never the working directory
        print(
            json.dumps({"state_dir": "", "warnings": [settings.config_error]}, indent=1) if as_json else f"status: {settings.config_error}"
        )
        return 1
    st = collect_status(settings)
    print(json.dumps(st, indent=1) if as_json else format_status(st))
    return 0


def retry_dead_letters(paths: Paths) -> int:
    """Move dead letters that still hold a record back into the queue.

    A dead record whose turn has a newer version waiting in the queue, or whose version (or a
    newer one) Langfuse already accepted, is dropped instead: the newer version holds everything
    it had, and must not be shadowed by the old one."""
    delivered = load_delivered(paths)
    with FileLock(paths.queue_lock, timeout=30):
        try:
            with open(paths.dead, "rb") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return 0
        queued = {e.record["key"] for e in queue_read(paths.queue) if e.record is not None}
        back, keep, superseded = [], [], 0
        for line in lines:
            try:
                d = json.loads(line)
            except ValueError:
                keep.append(line + b"\n")
                continue
            if isinstance(d, dict) and isinstance(d.get("record"), dict):
                if d["record"].get("key") in queued or superseded_by_delivered(d["record"], delivered):
                    superseded += 1
                    continue
                queued.add(d["record"].get("key"))
                back.append(json.dumps(dict(d["record"], queued_at=now_iso()), ensure_ascii=False).encode() + b"\n")
            else:
                keep.append(line + b"\n")
        if back:
            _append_lines(paths.queue, back)
        if back or superseded:
            write_atomic(paths.dead, b"".join(keep))
        return len(back)


def cmd_drain(settings: Settings, retry_dead: bool) -> int:
    if not settings.state_dir:
        print(f"drain: {settings.config_error}", file=sys.stderr)
        return 1
    try:
        return _drain(settings, retry_dead)
    except OSError as e:  # a file of the state folder we may not read or write (left by a sudo run?)
        print(f"drain stopped: {access_advice(e.filename or settings.state_dir, e)}", file=sys.stderr)
        return 1
    except LockTimeout as e:
        print(f"drain stopped: {e} stayed locked; try again, or see `status`", file=sys.stderr)
        return 1


def _drain(settings: Settings, retry_dead: bool) -> int:
    os.umask(0o077)
    log = get_logger(settings)
    paths = Paths(settings.state_dir)
    ensure_state_dir(paths.dir)
    lock = FileLock(paths.worker_lock, timeout=60)
    if not lock.acquire():
        print("the background worker is busy for over 60 s; try again, or see `status`", file=sys.stderr)
        return 1
    try:
        queued = process_inbox(paths, log, final=True).handled  # hook events not read yet
        if queued:
            print(f"read {queued} waiting hook event(s) into the queue", file=sys.stderr)
        if retry_dead:
            n = retry_dead_letters(paths)
            print(f"moved {n} dead letter(s) back into the queue", file=sys.stderr)

        def progress(done: int, total: int, s: DrainSummary) -> None:
            print(f"\rsending {done}/{total}  (sent {s.sent}, dead {s.dead})", end="", file=sys.stderr, flush=True)

        summary = drain_queue(settings, log, progress=progress if sys.stderr.isatty() else None)
    finally:
        lock.release()
    if sys.stderr.isatty():
        print(file=sys.stderr)
    left = collect_status(settings)["queue_turns"]
    print(
        f"drain: {summary.sent} sent, {summary.dead} moved to dead letters, {summary.corrupt} corrupt line(s) set aside, {left} left in the queue"
    )
    if summary.stopped_by:
        err = read_sender_status(paths)[0].get("last_error") or {}
        print(f"stopped: {err.get('advice') or summary.detail}")
        return 1
    return 0


# ============================================================================ the /langfuse slash command

PROJECT_CACHE = "langfuse_project.json"


def project_id(settings: Settings, timeout: float = 3.0) -> tuple[str, str]:
    """(Langfuse project id of the keys, "") or ("", why not). Asked once (GET /api/public/projects),
    then kept in <state>/langfuse_project.json per server and public key."""
    if not settings.has_keys:
        return "", "no Langfuse keys"
    cache_path = os.path.join(settings.state_dir, PROJECT_CACHE)
    key = f"{settings.base_url.rstrip('/')}|{settings.public_key}"
    try:
        with open(cache_path, encoding="utf-8") as f:
            cached = json.load(f)
        if isinstance(cached, dict) and isinstance(cached.get(key), str) and cached[key]:
            return cached[key], ""
    except (OSError, ValueError):
        cached = {}
    import base64
    import urllib.error
    import urllib.request

    auth = base64.b64encode(f"{settings.public_key}:{settings.secret_key}".encode()).decode()
    request = urllib.request.Request(settings.base_url.rstrip("/") + "/api/public/projects", headers={"Authorization": f"Basic {auth}"})
    try:
        with urllib.request.urlopen(request, timeout=min(timeout, settings.timeout)) as response:
            data = json.loads(response.read(1 << 20) or b"{}").get("data") or []
    except urllib.error.HTTPError as e:
        return "", f"Langfuse answered HTTP {e.code} to GET /api/public/projects" + (" (check the keys)" if e.code in (401, 403) else "")
    except (OSError, ValueError) as e:
        return "", f"cannot ask Langfuse for the project ({type(e).__name__}: {e})"
    pid = data[0].get("id") if data and isinstance(data[0], dict) else None
    if not isinstance(pid, str) or not pid:
        return "", "Langfuse listed no project for these keys"
    try:
        ensure_state_dir(settings.state_dir)
        cached = cached if isinstance(cached, dict) else {}
        cached[key] = pid
        write_atomic(cache_path, json.dumps(cached, indent=1).encode())
    except OSError:
        pass  # asked again next time
    return pid, ""


def session_url(settings: Settings, session_id: str) -> str:
    pid, why = project_id(settings)
    if not pid:
        return f"unknown: {why}"
    from urllib.parse import quote

    return f"{display_url(settings.base_url).rstrip('/')}/project/{pid}/sessions/{quote(session_id, safe='')}"


def format_slash(settings: Settings, st: dict, session_id: str, how: str) -> str:
    err = st["last_error"]
    muted = session_id in (st.get("muted_sessions") or [])
    lines = [
        "Langfuse tracing" + ("" if st["enabled"] else " is OFF (TRACE_TO_LANGFUSE=false)") + f" -> {st['base_url']}",
        f"  queue         {st['queue_turns']} trace(s) waiting"
        + (f", oldest {_age(st['queue_oldest'])}" if st["queue_oldest"] else "")
        + (f"; {st['dead_letters']} dead letter(s)" if st["dead_letters"] else ""),
        f"  last delivery {_age(st['last_success'])}",
        f"  last error    {'none' if not err else _age(err.get('time')) + ': ' + str(err.get('advice') or err.get('detail'))}",
    ]
    if session_id:
        lines.append(f"  this session  {session_id}" + (" (MUTED: `/langfuse unmute` traces it again)" if muted else ""))
        lines.append(f"  in Langfuse   {session_url(settings, session_id)}")
    else:
        lines.append(f"  this session  unknown ({how})")
    lines += [f"  WARNING: {w}" for w in st["warnings"]]
    return "\n".join(lines)


def cmd_slash(settings: Settings, action: str) -> int:
    """What `/langfuse [status|mute|unmute]` prints inside Claude Code: one screen, on stdout."""
    from .mute import cmd_mute, current_session

    action = (action or "status").strip().lower()
    if action not in ("status", "mute", "unmute"):
        print(f"/langfuse {action}: unknown; use /langfuse, /langfuse mute or /langfuse unmute")
        return 2
    if not settings.state_dir:
        print(f"Langfuse tracing: {settings.config_error}")
        return 1
    if action in ("mute", "unmute"):
        sys.stderr = sys.stdout  # one screen: say which session it took
        return cmd_mute(settings, None, True, mute=action == "mute")
    session_id, how = current_session(settings)
    print(format_slash(settings, collect_status(settings), session_id, how))
    return 0
