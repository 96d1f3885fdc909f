"""The critical path: what runs inside Claude Code's hook call, for every registered event.

Constant work whatever the size of the session: validate the event, record it in the inbox,
make sure one detached worker is running, exit. Nothing here reads the transcript, and nothing
imports the SDK, OpenTelemetry or an HTTP client (a test asserts this). Prints nothing, exits 0.
"""

from __future__ import annotations

import json
import os
import sys
import time

from .config import LazyLog, ensure_state_dir, load_settings
from .files import Paths
from .inbox import input_digest, write_news
from .runtime import key_fingerprint, wake_worker

MAX_EVENT_BYTES = 64 * 1024 * 1024


class BadEvent(ValueError):
    pass


def _transcript_event(event: dict) -> dict:
    """Events about a session's transcript: it has news the worker must read."""
    for field in ("session_id", "transcript_path"):
        if not isinstance(event.get(field), str) or not event[field]:
            raise BadEvent("hook event has no transcript_path/session_id")
    return event


MAX_FACT_CHARS = 500  # error texts, sources, model names: bounded, so every fact is constant work
COMMON_FIELDS = ("hook_event_name", "session_id", "transcript_path", "cwd", "prompt_id", "agent_id", "agent_type", "permission_mode")


def _short(value) -> str | None:
    return value[:MAX_FACT_CHARS] if isinstance(value, str) else None


def _fact(event: dict, **fields) -> dict:
    """A fact the transcript lacks: the common fields, the given ones (None left out) and when the
    hook saw it (`fact_at`, epoch seconds: recorded once, so a re-read never changes it)."""
    _transcript_event(event)
    out = {k: event[k] for k in COMMON_FIELDS if isinstance(event.get(k), str)}
    out.update({k: v for k, v in fields.items() if v is not None})
    out["fact_at"] = time.time()
    return out


def _number(value) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1e12 else None


def _tool_done(event: dict) -> dict:
    """PostToolUse / PostToolUseFailure: the tool's own run time (tool_response, which can be huge, stays out)."""
    tool_use_id = event.get("tool_use_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise BadEvent(f"{event.get('hook_event_name')} without tool_use_id")
    return _fact(
        event,
        tool_use_id=tool_use_id[:200],
        tool_name=_short(event.get("tool_name")),
        duration_ms=_number(event.get("duration_ms")),
        is_interrupt=event.get("is_interrupt") if isinstance(event.get("is_interrupt"), bool) else None,
        error=_short(event.get("error")),
    )


def _permission_request(event: dict) -> dict:
    """PermissionRequest has no tool_use_id: its input's digest finds the call (the input stays out)."""
    return _fact(event, tool_name=_short(event.get("tool_name")), input_digest=input_digest(event.get("tool_input")))


def _subagent_start(event: dict) -> dict:
    if not isinstance(event.get("agent_id"), str) or not event["agent_id"]:
        raise BadEvent("SubagentStart without agent_id")
    return _fact(event)


def _session_start(event: dict) -> dict:
    return _fact(event, source=_short(event.get("source")), model=_short(event.get("model")))


def _stop_failure(event: dict) -> dict:
    """A turn that ended on an API error (no Stop fires): read now, closed as an error."""
    details = event.get("error_details")
    return _fact(
        event,
        error=_short(event.get("error")),
        error_details=_short(details if isinstance(details, str) else json.dumps(details)[:MAX_FACT_CHARS] if details else None),
        last_assistant_message=_short(event.get("last_assistant_message")),
    )


# hook_event_name -> handler: checks the payload and returns what the worker gets (or raises BadEvent)
HANDLERS = {
    "Stop": _transcript_event,
    "SubagentStop": _transcript_event,
    "SessionEnd": _transcript_event,
    "StopFailure": _stop_failure,
    # facts only: the worker files them for the session (facts.py) without reading the transcript
    "PermissionRequest": _permission_request,
    "PostToolUse": _tool_done,
    "PostToolUseFailure": _tool_done,
    "SubagentStart": _subagent_start,
    "SessionStart": _session_start,
}


def accept_event(data: bytes) -> dict:
    try:
        event = json.loads(data.decode("utf-8", errors="replace") or "null")
    except ValueError as e:
        raise BadEvent(f"hook stdin is not JSON ({e}); is this file registered as a command hook?") from None
    if not isinstance(event, dict):
        raise BadEvent("hook stdin is not a JSON object")
    name = event.get("hook_event_name") or "Stop"  # older CLIs and hand-run tests may omit it
    handler = HANDLERS.get(name) if isinstance(name, str) else None
    if handler is None:
        raise BadEvent(f"hook event {name!r} is not one this hook handles; registered events: {', '.join(HANDLERS)}")
    return handler(event)


def hook_main() -> None:
    """Hook mode: whatever happens, print nothing and exit 0."""
    os.umask(0o077)
    settings = log = None
    try:
        data = sys.stdin.buffer.read(MAX_EVENT_BYTES)
        settings = load_settings()
        log = LazyLog(settings, stderr=False)
        if settings.config_error:
            log.error("configuration: %s", settings.config_error)
        if not settings.state_dir:
            return  # nowhere to keep anything (see config_error); never the working directory
        event = accept_event(data)
        paths = Paths(settings.state_dir)
        ensure_state_dir(paths.dir)
        write_news(paths.inbox, event, os.environ)
        wake_worker(paths, log, key_fingerprint(settings.public_key, settings.secret_key, settings.base_url))
    except BadEvent as e:
        log.error("ignored a hook call: %s", e)
    except BaseException as e:  # the hook must never hurt Claude Code
        try:
            (log or LazyLog(settings or load_settings(), stderr=False)).exception(
                "hook failed: %s (the transcript keeps the data; the next event retries)", e
            )
        except BaseException:
            pass
