"""The critical path: what runs inside Claude Code's hook call, for every registered event.

Constant work whatever the size of the session: validate the event, record it in the inbox,
make sure one detached worker is running, exit. Nothing here reads the transcript, and nothing
imports the SDK, OpenTelemetry or an HTTP client (a test asserts this). Prints nothing, exits 0.
"""

from __future__ import annotations

import json
import os
import sys

from .config import LazyLog, ensure_state_dir, load_settings
from .files import Paths
from .inbox import write_news
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


# hook_event_name -> handler: checks the payload and returns what the worker gets (or raises BadEvent)
HANDLERS = {
    "Stop": _transcript_event,
    "SubagentStop": _transcript_event,
    "SessionEnd": _transcript_event,
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
