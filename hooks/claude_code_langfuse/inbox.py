"""The inbox: one small file per hook event, written by the hook, consumed by the worker.

A news file says "this transcript has news": the event exactly as Claude Code sent it (what it
knows that the transcript may not yet: `last_assistant_message`, `prompt_id`, agent ids, the facts
of the tool and permission events) plus the tracing settings of the process that fired it (a
project's `.claude/settings.local.json` env reaches only that process), never a secret key.
Files are named by arrival time, so sorting the names gives the order events fired in.

The hook writes the event bytes as received, without parsing them: `json` (and the `re`, `enum`,
`functools` it pulls in) would be a third of the hook's start-up. The worker parses and checks
them here (`read_news`), so a bad event is logged and dropped by the worker instead.

    cclf-news 2 <received, ns since the epoch> <env bytes> <ci bytes>\n
    <env: NAME=value\0 ...><ci: NAME=value\0 ...><the event as received>

Not fsynced on purpose: the transcript is the durable record and the cursor says what was read,
so a news file lost in a power cut only delays that session's turns to its next event, `drain`
or `backfill`; no turn is lost.
"""

import os
import time

from .files import write_all

# Variables that change what tracing does; the hook records them with each event.
SETTINGS_PREFIXES = ("CC_LANGFUSE_", "LANGFUSE_", "CLAUDE_PLUGIN_OPTION_")
SETTINGS_NAMES = ("TRACE_TO_LANGFUSE",)
NEWS_VERSION = 1
# CI facts the worker puts into trace metadata (records.ci_metadata). Only these names are read,
# one lookup each (constant work); none of them is a secret (no token, no password variable).
CI_NAMES = (
    "CI",
    "GITHUB_ACTIONS",
    "GITHUB_REPOSITORY",
    "GITHUB_WORKFLOW",
    "GITHUB_RUN_ID",
    "GITHUB_RUN_ATTEMPT",
    "GITHUB_SERVER_URL",
    "GITHUB_SHA",
    "GITHUB_REF",
    "GITHUB_EVENT_NAME",
    "GITLAB_CI",
    "CI_PROJECT_PATH",
    "CI_PIPELINE_ID",
    "CI_PIPELINE_URL",
    "CI_JOB_ID",
    "CI_JOB_URL",
    "CI_COMMIT_SHA",
    "CI_MERGE_REQUEST_IID",
)
MAX_CI_VALUE_CHARS = 500


def is_secret_setting(name: str) -> bool:
    return "SECRET" in name


def settings_env(environ) -> dict:
    """The tracing settings of the event's process, secrets left out: the worker keeps its own (and
    a hook whose keys differ from the running worker's starts a new worker, see runtime.wake_worker)."""
    return {k: v for k, v in environ.items() if (k.startswith(SETTINGS_PREFIXES) or k in SETTINGS_NAMES) and not is_secret_setting(k)}


def ci_env(environ) -> dict:
    """The CI variables of the event's process (CI_NAMES only), each cut to a sane length."""
    out = {}
    for name in CI_NAMES:
        value = environ.get(name)
        if value:
            out[name] = value[:MAX_CI_VALUE_CHARS]
    return out


NEWS_MAGIC = b"cclf-news"
MAX_FACT_CHARS = 500  # error texts, sources, model names: bounded, so every fact stays small
COMMON_FIELDS = ("hook_event_name", "session_id", "transcript_path", "cwd", "prompt_id", "agent_id", "agent_type", "permission_mode")


def _pairs(values: dict) -> bytes:
    """NAME=value\0 pairs: environment strings hold no NUL, so nothing needs escaping."""
    return b"".join(f"{k}={v}".encode("utf-8", "surrogateescape") + b"\0" for k, v in values.items())


def _unpairs(data: bytes) -> dict:
    out = {}
    for item in data.split(b"\0"):
        name, sep, value = item.decode("utf-8", "surrogateescape").partition("=")
        if sep and name:
            out[name] = value
    return out


def looks_like_event(data: bytes) -> bool:
    """The hook's only check of the event (parsing it is the worker's job): a JSON object."""
    return data.lstrip()[:1] == b"{"


def write_news(inbox_dir: str, event: bytes, environ, received_ns: int | None = None) -> str:
    """Atomically add one news file (tmp + rename: the worker never sees half of one).
    `event` is the hook's stdin as received; `received_ns` is for tests (default: now)."""
    try:
        os.mkdir(inbox_dir, 0o700)
    except FileExistsError:
        pass
    now = time.time_ns()
    name = f"{now:020d}-{os.getpid()}.json"  # the order of writes, whatever a test says `received` was
    env, ci = _pairs(settings_env(environ)), _pairs(ci_env(environ))
    head = b"%s 2 %d %d %d\n" % (NEWS_MAGIC, now if received_ns is None else received_ns, len(env), len(ci))
    tmp = os.path.join(inbox_dir, "." + name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        write_all(fd, head + env + ci + event)
    finally:
        os.close(fd)
    final = os.path.join(inbox_dir, name)
    os.rename(tmp, final)
    return final


def list_news(inbox_dir: str) -> list[str]:
    """News file names, oldest first."""
    try:
        return sorted(n for n in os.listdir(inbox_dir) if n.endswith(".json") and not n.startswith("."))
    except FileNotFoundError:
        return []


class BadEvent(ValueError):
    """A hook call that is not an event this hook handles (logged and dropped by the worker)."""


def input_digest(value) -> str:
    """A tool input's fingerprint (PermissionRequest has no tool_use_id: the worker matches it to
    the transcript's tool_use by this), so the input itself (a Write's content) is never kept."""
    import json

    from .config import sha256_hex

    return sha256_hex(json.dumps(value, sort_keys=True, ensure_ascii=True, separators=(",", ":")).encode("ascii"))[:16]


# ============================================================================ the worker's side


def _short(value) -> str | None:
    return value[:MAX_FACT_CHARS] if isinstance(value, str) else None


def _number(value) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1e12 else None


def _transcript_event(event: dict, received: float) -> dict:
    """Events about a session's transcript: it has news the worker must read."""
    for field in ("session_id", "transcript_path"):
        if not isinstance(event.get(field), str) or not event[field]:
            raise BadEvent("hook event has no transcript_path/session_id")
    return event


def _fact(event: dict, received: float, **fields) -> dict:
    """A fact the transcript lacks: the common fields, the given ones (None left out) and when the
    hook saw it (`fact_at`, epoch seconds: from the news file, so a re-read never changes it)."""
    _transcript_event(event, received)
    out = {k: event[k] for k in COMMON_FIELDS if isinstance(event.get(k), str)}
    out.update({k: v for k, v in fields.items() if v is not None})
    out["fact_at"] = received
    return out


def _tool_done(event: dict, received: float) -> dict:
    """PostToolUse / PostToolUseFailure: the tool's own run time (tool_response, which can be huge, is left out)."""
    tool_use_id = event.get("tool_use_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        raise BadEvent(f"{event.get('hook_event_name')} without tool_use_id")
    return _fact(
        event,
        received,
        tool_use_id=tool_use_id[:200],
        tool_name=_short(event.get("tool_name")),
        duration_ms=_number(event.get("duration_ms")),
        is_interrupt=event.get("is_interrupt") if isinstance(event.get("is_interrupt"), bool) else None,
        error=_short(event.get("error")),
    )


def _permission_request(event: dict, received: float) -> dict:
    """PermissionRequest has no tool_use_id: its input's digest finds the call (the input is left out)."""
    return _fact(event, received, tool_name=_short(event.get("tool_name")), input_digest=input_digest(event.get("tool_input")))


def _subagent_start(event: dict, received: float) -> dict:
    if not isinstance(event.get("agent_id"), str) or not event["agent_id"]:
        raise BadEvent("SubagentStart without agent_id")
    return _fact(event, received)


def _session_start(event: dict, received: float) -> dict:
    return _fact(event, received, source=_short(event.get("source")), model=_short(event.get("model")))


def _stop_failure(event: dict, received: float) -> dict:
    """A turn that ended on an API error (no Stop fires): read now, closed as an error."""
    details = event.get("error_details")
    if details and not isinstance(details, str):
        import json

        details = json.dumps(details)
    return _fact(
        event,
        received,
        error=_short(event.get("error")),
        error_details=_short(details or None),
        last_assistant_message=_short(event.get("last_assistant_message")),
    )


# hook_event_name -> handler: checks the payload and returns what the worker uses (or raises BadEvent)
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


def accept_event(data: bytes, received: float = 0.0) -> dict:
    """The event the hook received, checked and cut to what the worker uses (raises BadEvent)."""
    import json

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
    return handler(event, received)


def read_news(path: str) -> dict | None:
    """A news record {"received", "event", "env", "ci"}, with "error" (and an empty event) when the
    event is not one we handle, or None for a file that is unreadable or not one of ours."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if data.startswith(b"{"):
        return _read_news_v1(data)
    head, sep, rest = data.partition(b"\n")
    fields = head.split(b" ")
    if not sep or len(fields) != 5 or fields[0] != NEWS_MAGIC or fields[1] != b"2" or not all(f.isdigit() for f in fields[2:]):
        return None
    received_ns, env_len, ci_len = (int(f) for f in fields[2:])
    if env_len + ci_len > len(rest):
        return None
    received = received_ns / 1e9
    news = {"v": 2, "received": received, "env": _unpairs(rest[:env_len]), "ci": _unpairs(rest[env_len : env_len + ci_len])}
    try:
        news["event"] = accept_event(rest[env_len + ci_len :], received)
    except BadEvent as e:
        news["event"], news["error"] = {}, str(e)
    return news


def _read_news_v1(data: bytes) -> dict | None:
    """A news file of the hook before 2026-12-02 (one JSON object, the event already checked):
    one may wait in the inbox across an upgrade."""
    import json

    try:
        news = json.loads(data.decode("utf-8", "replace"))
    except ValueError:
        return None
    if not isinstance(news, dict) or not isinstance(news.get("event"), dict):
        return None
    if not isinstance(news.get("env"), dict):
        news["env"] = {}
    if not isinstance(news.get("ci"), dict):
        news["ci"] = {}
    return news


def remove_news(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
