#!/usr/bin/env python3
"""claude-code-langfuse: every Claude Code turn as a back-dated Langfuse trace.

Registered as a Claude Code command hook for Stop, SubagentStop and SessionEnd. On the
critical path (hook mode) it only uses the standard library: it reads the new bytes of the
session's transcript, groups them into turns, turns those into plain-data trace records,
appends them to a local queue and starts a detached sender. The sender (same file, `send`)
imports the langfuse SDK and delivers the queue oldest first, removing a record only once the
server accepted it.

Sections, in the order data flows:
  settings -> event -> new bytes -> rows -> turns -> observations -> redaction -> queue
  -> state -> hook -> send -> sender loop -> status / drain / doctor / backfill -> main

Usage:
  langfuse_hook.py                      hook mode: event JSON on stdin, prints nothing, exits 0
  langfuse_hook.py status [--json]      queue, dead letters, last success / error, sender
  langfuse_hook.py drain [--retry-dead] send the queue now, in the foreground
  langfuse_hook.py doctor               check the installation end to end
  langfuse_hook.py backfill [...]       queue sessions from before the hook was installed
"""
from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import functools
import hashlib
import json
import os
import re
import sys
import time
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator, NamedTuple, Optional, Sequence

HOOK_VERSION = "0.1.0"
RECORD_VERSION = 1

# ============================================================================ settings

FALSE_WORDS = {"0", "false", "no", "off", "disable", "disabled"}
DEFAULT_BASE_URL = "http://localhost:3050"
DEFAULT_MAX_FIELD_CHARS = 100_000
DEFAULT_QUEUE_WARN_BYTES = 50 * 1024 * 1024
LOG_MAX_BYTES = 1024 * 1024
LOG_BACKUPS = 3
LOCK_TIMEOUT_S = 3.0


def _home() -> str:
    return os.path.expanduser("~")


def claude_dir() -> str:
    return os.environ.get("CLAUDE_CONFIG_DIR") or os.path.join(_home(), ".claude")


def default_config_path() -> str:
    return os.environ.get("CC_LANGFUSE_CONFIG") or os.path.join(_home(), ".claude", "langfuse", "config.json")


def default_state_dir() -> str:
    return os.environ.get("CC_LANGFUSE_STATE_DIR") or os.path.join(_home(), ".claude", "state")


# Small records are NamedTuples and plain classes, not dataclasses: `import dataclasses` pulls in
# `inspect` and costs the hook more start-up time than everything else it imports.


class Settings(NamedTuple):
    enabled: bool = True
    public_key: str = ""
    secret_key: str = ""
    base_url: str = DEFAULT_BASE_URL
    debug: bool = False
    user_id: str = ""
    max_field_chars: int = DEFAULT_MAX_FIELD_CHARS
    redact: bool = True
    redact_patterns: tuple = ()
    timeout: float = 10.0
    queue_warn_bytes: int = DEFAULT_QUEUE_WARN_BYTES
    state_dir: str = ""
    config_path: str = ""
    config_error: str = ""

    @property
    def has_keys(self) -> bool:
        return bool(self.public_key and self.secret_key)


def _read_config_file(path: str) -> tuple[dict, str]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}, ""
    except (OSError, ValueError) as e:
        return {}, f"cannot read config file {path}: {e}"
    if not isinstance(data, dict):
        return {}, f"config file {path} must hold a JSON object"
    return data, ""


def load_settings(environ: dict | None = None) -> Settings:
    env = os.environ if environ is None else environ
    config_path = env.get("CC_LANGFUSE_CONFIG") or default_config_path()
    conf, error = _read_config_file(config_path)

    def get(*names: str) -> str | None:
        # by name first: a CC_LANGFUSE_* key in the config file beats a LANGFUSE_* variable that
        # the user exported for their own applications
        for name in names:
            for source in (env, conf):
                value = source.get(name)
                if value not in (None, ""):
                    return value if isinstance(value, str) else json.dumps(value) if not isinstance(value, (int, float)) else str(value)
        return None

    problems = [error] if error else []

    def number(name: str, default: float, cast=float) -> float:
        raw = get(name)
        try:
            return cast(raw) if raw is not None else default
        except ValueError:
            problems.append(f"{name}={raw!r} is not a number; using {default:g}")
            return default

    patterns_raw = env.get("CC_LANGFUSE_REDACT_PATTERNS")
    if patterns_raw:
        patterns = [p for p in patterns_raw.splitlines() if p.strip()]
    else:
        conf_patterns = conf.get("CC_LANGFUSE_REDACT_PATTERNS") or []
        patterns = [conf_patterns] if isinstance(conf_patterns, str) else [p for p in conf_patterns if isinstance(p, str)]
    user_id = get("CC_LANGFUSE_USER_ID") or ""
    if not user_id:
        user_id = env.get("USER") or env.get("LOGNAME") or ""
        if not user_id:
            try:
                import pwd

                user_id = pwd.getpwuid(os.getuid()).pw_name
            except (ImportError, KeyError):
                user_id = "unknown"
    return Settings(
        enabled=(get("TRACE_TO_LANGFUSE") or "true").strip().lower() not in FALSE_WORDS,
        public_key=get("CC_LANGFUSE_PUBLIC_KEY", "CLAUDE_PLUGIN_OPTION_PUBLIC_KEY", "LANGFUSE_PUBLIC_KEY") or "",
        secret_key=get("CC_LANGFUSE_SECRET_KEY", "CLAUDE_PLUGIN_OPTION_SECRET_KEY", "LANGFUSE_SECRET_KEY") or "",
        base_url=(get("CC_LANGFUSE_BASE_URL", "CLAUDE_PLUGIN_OPTION_BASE_URL", "LANGFUSE_BASE_URL", "LANGFUSE_HOST") or DEFAULT_BASE_URL).rstrip("/"),
        debug=(get("CC_LANGFUSE_DEBUG") or "false").strip().lower() not in FALSE_WORDS,
        user_id=user_id,
        max_field_chars=max(1000, int(number("CC_LANGFUSE_MAX_FIELD_CHARS", DEFAULT_MAX_FIELD_CHARS, int))),
        redact=(get("CC_LANGFUSE_REDACT") or "true").strip().lower() not in FALSE_WORDS,
        redact_patterns=patterns,
        timeout=max(0.5, number("CC_LANGFUSE_TIMEOUT", 10.0)),
        queue_warn_bytes=int(number("CC_LANGFUSE_QUEUE_WARN_MB", DEFAULT_QUEUE_WARN_BYTES / 1048576) * 1048576),
        state_dir=os.path.expanduser(get("CC_LANGFUSE_STATE_DIR") or default_state_dir()),
        config_path=config_path,
        config_error="; ".join(problems),
    )


# ============================================================================ log

_LOGGER = None


def get_logger(settings: Settings):
    """A size-rotated file log in the state folder; never stdout (Claude Code reads it)."""
    global _LOGGER
    if _LOGGER is not None:
        return _LOGGER
    import logging
    import logging.handlers

    logger = logging.getLogger("claude_code_langfuse")
    logger.setLevel(logging.DEBUG if settings.debug else logging.INFO)
    logger.propagate = False
    try:
        ensure_state_dir(settings.state_dir)
        handler: Any = logging.handlers.RotatingFileHandler(
            os.path.join(settings.state_dir, "langfuse_hook.log"), maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
        )
    except OSError:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(message)s"))
    logger.addHandler(handler)
    _LOGGER = logger
    return logger


def display_url(url: str) -> str:
    """A URL as it may appear in logs, status and sender messages: without user:password or query."""
    if "@" not in url and "?" not in url and "#" not in url:
        return url
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class LazyLog:
    """The hook's logger, but `logging` is imported only when a line is really written."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def debug(self, *args) -> None:
        if self.settings.debug:
            get_logger(self.settings).debug(*args)

    def __getattr__(self, level: str):
        return getattr(get_logger(self.settings), level)


def ensure_state_dir(path: str) -> None:
    os.makedirs(os.path.join(path, "locks"), mode=0o700, exist_ok=True)
    for p in (path, os.path.join(path, "locks")):
        try:
            if os.stat(p).st_mode & 0o077:
                os.chmod(p, 0o700)
        except OSError:
            pass


# ============================================================================ event


class HookEvent(NamedTuple):
    name: str
    session_id: str
    transcript_path: str
    cwd: str = ""
    prompt_id: str = ""
    last_assistant_message: str | None = None
    stop_hook_active: bool = False
    agent_id: str = ""
    agent_transcript_path: str = ""
    permission_mode: str = ""
    raw: Any = None


class BadEvent(ValueError):
    pass


def parse_event(data: bytes) -> HookEvent:
    try:
        obj = json.loads(data.decode("utf-8", errors="replace") or "null")
    except ValueError as e:
        raise BadEvent(f"hook stdin is not JSON ({e}); is this file registered as a command hook?") from None
    if not isinstance(obj, dict):
        raise BadEvent("hook stdin is not a JSON object")
    path = obj.get("transcript_path") or ""
    session = obj.get("session_id") or ""
    if not isinstance(path, str) or not isinstance(session, str) or not path or not session:
        raise BadEvent("hook event has no transcript_path/session_id")
    lam = obj.get("last_assistant_message")
    return HookEvent(
        name=str(obj.get("hook_event_name") or ""),
        session_id=session,
        transcript_path=os.path.expanduser(path),
        cwd=str(obj.get("cwd") or ""),
        prompt_id=str(obj.get("prompt_id") or ""),
        last_assistant_message=lam if isinstance(lam, str) else None,
        stop_hook_active=bool(obj.get("stop_hook_active")),
        agent_id=str(obj.get("agent_id") or ""),
        agent_transcript_path=os.path.expanduser(str(obj.get("agent_transcript_path") or "")),
        permission_mode=str(obj.get("permission_mode") or ""),
        raw=obj,
    )


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
_ATTACHMENT_HEAD_RE = re.compile(rb'^\{"parentUuid":(?:null|"[^"]{0,64}"),"isSidechain":(?:true|false),"attachment":\{')


_NOT_NEEDED = object()  # a blank line, or a big line of a kind the hook never reads


def _decode_line(buf: bytes, begin: int, end: int) -> Any:
    """The JSON object of buf[begin:end], or a stand-in for the big lines the hook never needs."""
    if end - begin > BIG_LINE:
        if buf.startswith(_SKIP_PREFIXES, begin) or _ATTACHMENT_HEAD_RE.match(buf, begin):
            return _NOT_NEEDED  # not even copied out of the buffer
        if buf.startswith(_API_REQUEST_PREFIX, begin):
            head = buf[begin : begin + 512]
            rid, ts = _HEAD_ID_RE.search(head), _HEAD_TS_RE.search(head)
            if rid and ts:
                return {"type": "api-request", "id": rid.group(1).decode(), "timestamp": ts.group(1).decode()}
    line = buf[begin:end]
    if not line or line.isspace():
        return _NOT_NEEDED
    try:
        return json.loads(line)
    except ValueError:
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


# ============================================================================ turns

INTERRUPT_PREFIX = "[Request interrupted by user"
LOCAL_CAVEAT_PREFIX = "Caveat: The messages below were generated by the user while running local commands"
STOP_FEEDBACK_PREFIX = "Stop hook feedback:"
AGENT_TOOL_NAMES = ("Agent", "Task")


def parse_ts(value: str | None) -> _dt.datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        t = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)


def iso_ms(t: _dt.datetime) -> str:
    t = t.astimezone(_dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def norm_ts(value: str | None) -> str:
    t = parse_ts(value)
    return iso_ms(t) if t else ""


def content_text(content: Any) -> str:
    """The text of a message content: a string, or the text blocks of a block list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str))
    return ""


def user_row_kind(data: dict, previous_kind: str = "") -> str:
    """What a `user` line is. Only `prompt` and the synthetic starters open a turn."""
    msg = data.get("message") or {}
    content = msg.get("content") if isinstance(msg, dict) else None
    if data.get("isCompactSummary"):
        return "compact-summary"
    if isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content):
        return "tool-result"
    text = content_text(content).lstrip()
    origin = data.get("origin") if isinstance(data.get("origin"), dict) else {}
    origin_kind = origin.get("kind") or ""
    if origin_kind == "task-notification" or text.startswith("<task-notification>"):
        return "task-notification"
    if data.get("isMeta"):
        if text.startswith(STOP_FEEDBACK_PREFIX):
            return "stop-hook-feedback"
        if text.startswith(LOCAL_CAVEAT_PREFIX):
            return "local-caveat"
        return "meta"
    if data.get("isVisibleInTranscriptOnly"):
        return "meta"
    if text.startswith(INTERRUPT_PREFIX):
        return "interrupt"
    if text.startswith("<local-command-stdout>") or text.startswith("<local-command-stderr>"):
        return "local-command-output"
    if text.startswith("<bash-input>") or text.startswith("<bash-stdout>") or text.startswith("<bash-stderr>"):
        return "bash-mode"
    if text.startswith("<command-name>") or text.startswith("<command-message>"):
        return "local-command" if previous_kind == "local-caveat" else "slash-command"
    if text.startswith("<teammate-message>") or text.startswith("<agent-message>") or origin_kind not in ("", "human"):
        return "synthetic"
    if not text and not (isinstance(content, list) and content):
        return "empty"
    return "prompt"


TURN_STARTERS = {"prompt", "slash-command", "task-notification", "synthetic"}


class Generation:
    """One API response, merged from its per-block lines."""

    __slots__ = ("message_id", "model", "blocks", "usage", "usage_output_tokens", "stop_reason", "request_id",
                 "start", "first_ts", "end", "synthetic", "api_error")

    def __init__(self, message_id: str, model: str, request_id: str = "", start: str = "", first_ts: str = ""):
        self.message_id, self.model, self.request_id = message_id, model, request_id
        self.start, self.first_ts, self.end = start, first_ts, ""
        self.blocks: list = []
        self.usage: dict = {}
        self.usage_output_tokens = -1
        self.stop_reason: str | None = None
        self.synthetic = self.api_error = False

    @property
    def text(self) -> str:
        return "\n".join(b.get("text", "") for b in self.blocks if b.get("type") == "text" and b.get("text"))

    @property
    def last_text(self) -> str:
        texts = [b.get("text", "") for b in self.blocks if b.get("type") == "text" and b.get("text")]
        return texts[-1] if texts else ""


class ToolCall:
    """One tool_use block and, once it arrives, its tool_result (paired by id)."""

    __slots__ = ("id", "name", "input", "start", "message_id", "end", "output", "is_error", "has_result",
                 "result_meta", "agent", "agent_id", "agent_meta", "agent_run")

    def __init__(self, id: str, name: str, input: Any, start: str, message_id: str = ""):
        self.id, self.name, self.input, self.start, self.message_id = id, name, input, start, message_id
        self.end = ""
        self.output: Any = None
        self.is_error = self.has_result = False
        self.result_meta: Any = None
        self.agent: Turn | None = None  # the subagent run this call launched
        self.agent_id = ""
        self.agent_meta: dict = {}
        self.agent_run = ""  # set when one agent file serves several calls (resumed agents)


class Event(NamedTuple):
    name: str
    ts: str
    uid: str
    level: str = "DEFAULT"
    input: Any = None
    metadata: Any = None


class Turn:
    """A prompt and everything up to the next prompt (or one subagent run)."""

    def __init__(self, key: str, kind: str, start_offset: int, prompt: Any = None, prompt_row: dict | None = None,
                 start: str = "", end: str = "", end_offset: int = 0, meta_row: dict | None = None):
        self.key, self.kind, self.start_offset, self.prompt = key, kind, start_offset, prompt
        self.prompt_row: dict = prompt_row or {}
        self.meta_row: dict = meta_row or {}
        self.start, self.end, self.end_offset = start, end, end_offset
        self.items: list = []  # Generation | ToolCall | Event, in file order
        self.generations: dict = {}
        self.tools: dict = {}
        self.sidechain_rows: list = []
        self.command_expansion = ""
        self.interrupted = False
        self.finished = False  # a turn_duration line or a following prompt closed it
        self.hook_durations_ms: list = []
        self.last_row_ts = ""

    @property
    def final_text(self) -> str:
        for item in reversed(self.items):
            if isinstance(item, Generation) and not item.synthetic and item.last_text:
                return item.last_text
        return ""

    @property
    def last_generation(self) -> Generation | None:
        for item in reversed(self.items):
            if isinstance(item, Generation) and not item.synthetic:
                return item
        return None

    @property
    def pending_tools(self) -> list[ToolCall]:
        return [t for t in self.tools.values() if not t.has_result]

    def looks_complete(self) -> bool:
        """Final answer on disk: a turn_duration line, or a last response with no open tool call."""
        if self.finished:
            return True
        gen = self.last_generation
        return bool(gen and not self.pending_tools and gen.stop_reason != "tool_use" and gen.last_text)


class TurnBuilder:
    """The one turn grammar. Feed rows in file order; completed turns come out of feed().

    single_turn=True treats every row as part of one turn (a subagent transcript).
    """

    def __init__(self, single_turn: bool = False):
        self.single_turn = single_turn
        self.current: Turn | None = None
        self.previous_user_kind = ""
        self.last_ts = ""
        self.held: list = []
        self.request_ts: dict[str, str] = {}

    # -- helpers
    def _new_turn(self, row: Row, kind: str) -> Turn:
        d = row.data
        key = d.get("promptId") or d.get("uuid") or f"offset-{row.start}"
        msg = d.get("message") or {}
        return Turn(
            key=str(key), kind=kind, start_offset=row.start, prompt=msg.get("content") if isinstance(msg, dict) else None,
            prompt_row=d, start=norm_ts(d.get("timestamp")), end=norm_ts(d.get("timestamp")), end_offset=row.end, meta_row=d,
        )

    def feed(self, row: Row) -> Turn | None:
        d = row.data
        kind_of_row = row.type
        if kind_of_row == "api-request":
            # 2.1.x: written when the request goes out; its id is the assistant lines' requestRef
            if self.current is not None and d.get("id") and d.get("timestamp"):
                self.request_ts[str(d["id"])] = norm_ts(d.get("timestamp"))
            return None
        if kind_of_row not in ("user", "assistant", "system"):
            return None
        ts = norm_ts(d.get("timestamp"))
        if d.get("isSidechain") and not self.single_turn:
            if self.current is not None:
                self.current.sidechain_rows.append(row)
                self.current.end_offset = row.end
            return None
        finished: Turn | None = None
        if kind_of_row == "user":
            ukind = user_row_kind(d, self.previous_user_kind)
            self.previous_user_kind = ukind
            starts = ukind in TURN_STARTERS or (self.single_turn and self.current is None)
            if starts and self.current is not None and not self.single_turn:
                same_prompt = d.get("promptId") and d.get("promptId") == self.current.prompt_row.get("promptId")
                if not same_prompt:
                    finished = self.current
                    finished.finished = True
                    self.current = None
                elif ukind in TURN_STARTERS:
                    ukind = "meta"
            if self.current is None:
                if not starts:
                    if ukind == "meta" and d.get("promptId") and not self.single_turn:
                        self.held.append((row, ukind, ts))  # a companion line read before its turn's first line
                    # other rows before any prompt (or after an offset reset mid-turn) have no turn to join
                    if ts:
                        self.last_ts = ts
                    return finished
                self.current = self._new_turn(row, ukind if ukind in TURN_STARTERS else "prompt")
                self.last_ts = ts or self.last_ts
                held, self.held = self.held, []
                if held:
                    self.current.start_offset = held[0][0].start
                    for h_row, h_kind, h_ts in held:
                        if h_row.data.get("promptId") == d.get("promptId"):
                            self._user_row(h_row, h_kind, h_ts)
                return finished
            prompt_id, current_prompt = d.get("promptId"), self.current.prompt_row.get("promptId")
            if ukind == "meta" and not self.single_turn and prompt_id and current_prompt and prompt_id != current_prompt:
                # context written just before the next turn's first line (e.g. a task notification's
                # companion) belongs to that turn, not to this one
                self.held.append((row, ukind, ts))
                return finished
            self._user_row(row, ukind, ts)
        elif kind_of_row == "assistant":
            if self.current is None:
                return None
            self._assistant_row(row, ts)
        else:
            if self.current is None:
                return None
            self._system_row(row, ts)
        if self.current is not None:
            self.current.end_offset = row.end
            if ts:
                self.current.end = max(self.current.end, ts)
                self.current.last_row_ts = ts
        if ts:
            self.last_ts = ts
        return finished

    def finish(self) -> Turn | None:
        turn, self.current = self.current, None
        return turn

    def _user_row(self, row: Row, ukind: str, ts: str) -> None:
        turn = self.current
        d = row.data
        content = (d.get("message") or {}).get("content")
        uid = str(d.get("uuid") or row.start)
        if ukind == "tool-result":
            blocks = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
            for b in blocks:
                call = turn.tools.get(b.get("tool_use_id"))
                result_meta = d.get("toolUseResult") if len(blocks) == 1 else None
                if call is None:
                    turn.items.append(Event("tool-result-without-call", ts, uid, "WARNING", tool_result_output(b.get("content")), {"tool_use_id": b.get("tool_use_id")}))
                    continue
                call.has_result = True
                call.end = ts or call.start
                call.output = tool_result_output(b.get("content"))
                call.is_error = bool(b.get("is_error"))
                call.result_meta = result_meta
                if call.name in AGENT_TOOL_NAMES:
                    call.agent_id = agent_id_from_result(result_meta, call.output)
        elif ukind == "meta":
            text = content_text(content)
            if turn.kind == "slash-command" and not turn.command_expansion and not turn.generations:
                turn.command_expansion = text
            elif d.get("sourceToolUseID"):
                turn.items.append(Event("skill-instructions", ts, uid, "DEBUG", text, {"tool_use_id": d.get("sourceToolUseID")}))
            else:
                turn.items.append(Event("context", ts, uid, "DEBUG", text))
        elif ukind == "stop-hook-feedback":
            turn.items.append(Event("stop-hook-feedback", ts, uid, "DEFAULT", content_text(content)))
        elif ukind == "interrupt":
            turn.interrupted = True
            turn.items.append(Event("interrupted", ts, uid, "WARNING", content_text(content)))
        elif ukind == "compact-summary":
            turn.items.append(Event("compaction-summary", ts, uid, "DEFAULT", content_text(content)))
        elif ukind in ("local-command", "local-command-output", "bash-mode"):
            turn.items.append(Event(ukind, ts, uid, "DEBUG", content_text(content)))
        # local-caveat and empty rows carry nothing worth keeping

    def _assistant_row(self, row: Row, ts: str) -> None:
        turn = self.current
        d = row.data
        msg = d.get("message") or {}
        if not isinstance(msg, dict):
            return
        mid = str(msg.get("id") or d.get("requestId") or d.get("uuid") or row.start)
        gen = turn.generations.get(mid)
        model = str(msg.get("model") or "")
        if gen is None:
            start = self.request_ts.get(str(d.get("requestRef") or "")) or self.last_ts or ts
            gen = Generation(message_id=mid, model=model, request_id=str(d.get("requestId") or ""), start=start, first_ts=ts)
            gen.synthetic = model == "<synthetic>" or bool(d.get("isApiErrorMessage"))
            gen.api_error = bool(d.get("isApiErrorMessage"))
            turn.generations[mid] = gen
            turn.items.append(gen)
        gen.end = max(gen.end, ts) if gen.end else ts
        usage = msg.get("usage")
        if isinstance(usage, dict):
            out = usage.get("output_tokens") or 0
            if isinstance(out, int) and out > gen.usage_output_tokens:
                gen.usage, gen.usage_output_tokens = usage, out
        if msg.get("stop_reason"):
            gen.stop_reason = msg.get("stop_reason")
        content = msg.get("content")
        blocks = content if isinstance(content, list) else ([{"type": "text", "text": content}] if isinstance(content, str) else [])
        for b in blocks:
            if not isinstance(b, dict):
                continue
            gen.blocks.append(b)
            if b.get("type") in ("tool_use", "server_tool_use") and b.get("id"):
                call = turn.tools.get(b["id"])
                if call is None:
                    call = ToolCall(id=str(b["id"]), name=str(b.get("name") or "tool"), input=b.get("input"), start=ts, message_id=mid)
                    turn.tools[call.id] = call
                    turn.items.append(call)
            elif b.get("type") == "web_search_tool_result" and b.get("tool_use_id") in turn.tools:
                call = turn.tools[b["tool_use_id"]]
                call.has_result, call.end, call.output = True, ts, b.get("content")

    def _system_row(self, row: Row, ts: str) -> None:
        turn = self.current
        d = row.data
        sub = d.get("subtype") or ""
        uid = str(d.get("uuid") or row.start)
        if sub == "turn_duration":
            turn.finished = True
        elif sub == "stop_hook_summary":
            for info in d.get("hookInfos") or []:
                if isinstance(info, dict) and isinstance(info.get("durationMs"), (int, float)):
                    turn.hook_durations_ms.append({"command": str(info.get("command", ""))[:200], "durationMs": info["durationMs"]})
        elif sub in ("compact_boundary", "microcompact_boundary"):
            meta = d.get("compactMetadata") or d.get("microcompactMetadata") or {}
            turn.items.append(Event("compaction" if sub == "compact_boundary" else "microcompaction", ts, uid, "DEFAULT", d.get("content"), meta if isinstance(meta, dict) else {}))
        elif sub == "api_error":
            meta = {k: d.get(k) for k in ("retryAttempt", "retryInMs", "maxRetries") if k in d}
            turn.items.append(Event("api-error", ts, uid, "WARNING", d.get("error") or d.get("content"), meta))
        elif sub == "local_command":
            turn.items.append(Event("local-command", ts, uid, "DEBUG", d.get("content")))


def blocks_text(content: Any, other_blocks: bool = False) -> str:
    """A message or tool_result content as text; images become placeholders, never base64.

    other_blocks=True keeps unknown block types as (short) JSON, for tool results."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = []
    for b in content:
        if not isinstance(b, dict):
            continue
        if b.get("type") == "text":
            parts.append(b.get("text", ""))
        elif b.get("type") == "image":
            parts.append(image_placeholder(b))
        elif other_blocks:
            parts.append(json.dumps(b, ensure_ascii=False)[:2000])
    return "\n".join(parts)


def prompt_text(content: Any) -> str:
    return blocks_text(content)


def tool_result_output(content: Any) -> Any:
    return content if not isinstance(content, (str, list)) else blocks_text(content, other_blocks=True)


AGENT_ID_RE = re.compile(r"agentId:\s*([0-9a-zA-Z_-]+)")


def agent_id_from_result(result_meta: Any, output: Any) -> str:
    if isinstance(result_meta, dict) and result_meta.get("agentId"):
        return str(result_meta["agentId"])
    if isinstance(output, str):
        m = AGENT_ID_RE.search(output)
        if m:
            return m.group(1)
    return ""


def group_turns(rows: Iterable[Row], single_turn: bool = False, bad_lines: list | None = None) -> Iterator[Turn]:
    """All turns of a row stream; the last one may still be open (check looks_complete)."""
    builder = TurnBuilder(single_turn=single_turn)
    for row in rows:
        try:
            done = builder.feed(row)
        except (AttributeError, TypeError, ValueError, KeyError):
            # a line of a shape this version does not know: skip it, never lose the session
            if bad_lines is not None:
                bad_lines.append(row.start)
            continue
        if done is not None:
            yield done
    last = builder.finish()
    if last is not None:
        yield last


# ---------------------------------------------------------------------------- subagents


class SubagentFinder:
    """Links Agent/Task calls to their subagent transcripts, for every layout Claude Code used.

    2.1.x: <session>/subagents/agent-<id>.jsonl + agent-<id>.meta.json (toolUseId)
    2.0.x: agent-<id>.jsonl next to the session file (agentId in the tool result)
    1.0.x: inline isSidechain rows in the session file (matched by prompt text, then order)
    """

    def __init__(self, transcript_path: str, session_id: str):
        base = transcript_path[:-6] if transcript_path.endswith(".jsonl") else transcript_path
        self.session_dir = base
        self.subagents_dir = os.path.join(base, "subagents")
        self.flat_dir = os.path.dirname(transcript_path)
        self._meta_by_tool: dict | None = None

    def _scan_meta(self) -> dict:
        if self._meta_by_tool is None:
            self._meta_by_tool = {}
            for root, _dirs, files in os.walk(self.subagents_dir):
                for name in files:
                    if name.endswith(".meta.json"):
                        path = os.path.join(root, name)
                        try:
                            with open(path, encoding="utf-8") as f:
                                meta = json.load(f)
                        except (OSError, ValueError):
                            continue
                        if isinstance(meta, dict) and meta.get("toolUseId"):
                            meta["_path"] = path[: -len(".meta.json")] + ".jsonl"
                            self._meta_by_tool[meta["toolUseId"]] = meta
        return self._meta_by_tool

    def meta_for_agent(self, agent_id: str) -> dict:
        path = os.path.join(self.subagents_dir, f"agent-{agent_id}.meta.json")
        try:
            with open(path, encoding="utf-8") as f:
                meta = json.load(f)
            return meta if isinstance(meta, dict) else {}
        except (OSError, ValueError):
            return {}

    def find(self, call: ToolCall) -> tuple[str, dict]:
        meta = self._scan_meta().get(call.id)
        if meta:
            return meta["_path"], meta
        if call.agent_id:
            for path in (os.path.join(self.subagents_dir, f"agent-{call.agent_id}.jsonl"), os.path.join(self.flat_dir, f"agent-{call.agent_id}.jsonl")):
                if os.path.exists(path):
                    return path, self.meta_for_agent(call.agent_id)
        return "", {}

    def attach(self, turn: Turn, depth: int = 0) -> None:
        calls = [c for c in turn.tools.values() if c.name in AGENT_TOOL_NAMES]
        if not calls:
            return
        if turn.sidechain_rows:
            attach_inline_sidechains(turn, calls)
        runs_taken: dict[str, set] = {}  # agent file -> run starts already given to a call of this turn
        for call in calls:
            if call.agent is not None:
                continue
            path, meta = self.find(call)
            if not path:
                continue
            rows = self._rows_of_run(read_all_rows(path), call, runs_taken.setdefault(path, set()))
            if not rows:
                continue
            if len(runs_taken[path]) > 1:
                call.agent_run = f"{call.agent_id or path}:{call.id}"  # a resumed agent: one observation per run
            agent_turn = next(group_turns(rows, single_turn=True), None)
            if agent_turn is None:
                continue
            call.agent, call.agent_meta = agent_turn, {k: v for k, v in meta.items() if not k.startswith("_")}
            if not call.agent_id:
                call.agent_id = str(rows[0].data.get("agentId") or meta.get("agentId") or "")
            if depth < 4:
                self.attach(agent_turn, depth + 1)


    @staticmethod
    def _rows_of_run(rows: list[Row], call: ToolCall, taken: set) -> list[Row]:
        """The part of an agent file that this call ran: a resumed agent (Task `resume`) appends a new
        run, starting with the call's prompt, to the same file."""
        starts = [i for i, r in enumerate(rows) if r.type == "user" and user_row_kind(r.data) in ("prompt", "slash-command")]
        if len(starts) <= 1:
            if taken:
                return []  # one run only, and another call of this turn has it
            taken.add(0)
            return rows
        want = str((call.input or {}).get("prompt", "")).strip() if isinstance(call.input, dict) else ""
        pick = next((i for i in starts if i not in taken and content_text((rows[i].data.get("message") or {}).get("content")).strip() == want), None)
        if pick is None:
            pick = next((i for i in starts if i not in taken), None)
        if pick is None:
            return []
        taken.add(pick)
        end = next((i for i in starts if i > pick), len(rows))
        return rows[pick:end]


def attach_inline_sidechains(turn: Turn, calls: list[ToolCall]) -> None:
    """1.0.x kept subagents inline: split the sidechain rows into chains and match them to calls."""
    chains: list[list[Row]] = []
    chain_of: dict[str, int] = {}
    for row in turn.sidechain_rows:
        parent = row.data.get("parentUuid")
        if parent in chain_of:
            idx = chain_of[parent]
        elif parent is None or not chains:
            chains.append([])
            idx = len(chains) - 1
        else:
            idx = len(chains) - 1
        chains[idx].append(row)
        if row.data.get("uuid"):
            chain_of[row.data["uuid"]] = idx
    unmatched = [c for c in calls if c.agent is None]
    for rows in chains:
        first = next((r for r in rows if r.type == "user"), None)
        prompt = content_text(((first.data.get("message") or {}).get("content")) if first else "").strip()
        match = next((c for c in unmatched if isinstance(c.input, dict) and str(c.input.get("prompt", "")).strip() == prompt), None)
        if match is None and unmatched:
            match = unmatched[0]
        if match is None:
            continue
        unmatched.remove(match)
        match.agent = next(group_turns(rows, single_turn=True), None)


# ============================================================================ observations


def trace_id_for(session_id: str, turn_key: str) -> str:
    tid = hashlib.sha256(f"{session_id}:{turn_key}".encode()).hexdigest()[:32]
    return tid if tid.strip("0") else "1" * 32


def observation_id(trace_id: str, kind: str, natural_id: str) -> str:
    oid = hashlib.sha256(f"{trace_id}:{kind}:{natural_id}".encode()).hexdigest()[:16]
    return oid if oid.strip("0") else "1" * 16


def usage_details(usage: dict) -> dict | None:
    """Anthropic usage -> the keys Langfuse's price table knows (notes/langfuse-v5.md section 4)."""
    if not usage:
        return None
    out: dict[str, int] = {}
    for src, dst in (("input_tokens", "input"), ("output_tokens", "output"), ("cache_read_input_tokens", "cache_read_input_tokens")):
        if isinstance(usage.get(src), int):
            out[dst] = usage[src]
    breakdown = usage.get("cache_creation") if isinstance(usage.get("cache_creation"), dict) else None
    if breakdown and (breakdown.get("ephemeral_5m_input_tokens") or breakdown.get("ephemeral_1h_input_tokens")):
        out["input_cache_creation_5m"] = int(breakdown.get("ephemeral_5m_input_tokens") or 0)
        out["input_cache_creation_1h"] = int(breakdown.get("ephemeral_1h_input_tokens") or 0)
    elif isinstance(usage.get("cache_creation_input_tokens"), int):
        out["cache_creation_input_tokens"] = usage["cache_creation_input_tokens"]
    return out or None


def block_for_output(b: dict) -> dict:
    t = b.get("type")
    if t == "text":
        return {"type": "text", "text": b.get("text", "")}
    if t == "thinking":
        return {"type": "thinking", "thinking": b.get("thinking", "")}
    if t == "redacted_thinking":
        return {"type": "redacted_thinking"}
    if t in ("tool_use", "server_tool_use"):
        return {"type": t, "id": b.get("id"), "name": b.get("name"), "input": b.get("input")}
    if t == "image":
        return {"type": "image", "placeholder": image_placeholder(b)}
    return {k: v for k, v in b.items() if k not in ("signature", "data")}


COMMAND_RE = re.compile(r"<command-name>\s*(.*?)\s*</command-name>", re.S)
COMMAND_ARGS_RE = re.compile(r"<command-args>\s*(.*?)\s*</command-args>", re.S)
TASK_SUMMARY_RE = re.compile(r"<summary>\s*(.*?)\s*</summary>", re.S)
TASK_TOOL_USE_RE = re.compile(r"<tool-use-id>\s*([^<\s]+)\s*</tool-use-id>")
TASK_ID_RE = re.compile(r"<task-id>\s*([^<\s]+)\s*</task-id>")


def turn_title(turn: Turn) -> str:
    text = prompt_text(turn.prompt)
    if turn.kind == "slash-command":
        m = COMMAND_RE.search(text)
        if m:
            args = COMMAND_ARGS_RE.search(text)
            text = m.group(1) + (" " + args.group(1) if args and args.group(1) else "")
    elif turn.kind == "task-notification":
        m = TASK_SUMMARY_RE.search(text)
        return ("Task notification: " + (m.group(1) if m else "background task finished"))[:120]
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not first:
        first = "(empty prompt)"
    return first if len(first) <= 120 else first[:117] + "..."


class TraceContext(NamedTuple):
    session_id: str
    user_id: str
    project: str
    turn_number: int
    trace_id: str


def turn_observations(turn: Turn, trace_id: str, parent_id: str, turn_end: str) -> list[dict]:
    """Children of a turn (or of a subagent run): generations, tools, agents, events."""
    obs: list[dict] = []
    for item in turn.items:
        if isinstance(item, Generation):
            if item.synthetic:
                obs.append(_obs(observation_id(trace_id, "event", item.message_id), parent_id, "event",
                                "api-error" if item.api_error else "synthetic-message", item.first_ts or item.end, item.first_ts or item.end,
                                output=item.text, level="WARNING" if item.api_error else "DEFAULT", metadata={"message_id": item.message_id}))
                continue
            meta = {"message_id": item.message_id, "request_id": item.request_id, "stop_reason": item.stop_reason}
            for k in ("service_tier", "speed"):
                if item.usage.get(k):
                    meta[k] = item.usage[k]
            thinking = (item.usage.get("output_tokens_details") or {}).get("thinking_tokens") if isinstance(item.usage.get("output_tokens_details"), dict) else None
            if thinking:
                meta["thinking_tokens"] = thinking
            obs.append(_obs(observation_id(trace_id, "gen", item.message_id), parent_id, "generation", item.model or "claude",
                            item.start or item.first_ts, item.end, output={"role": "assistant", "content": [block_for_output(b) for b in item.blocks]},
                            metadata=meta, model=item.model, usage=usage_details(item.usage), completion_start=item.first_ts))
        elif isinstance(item, ToolCall):
            tool_id = observation_id(trace_id, "tool", item.id)
            meta: dict = {"tool_use_id": item.id}
            if isinstance(item.result_meta, dict):
                meta.update({f"result.{k}": v for k, v in item.result_meta.items() if isinstance(v, (int, float, bool)) or (isinstance(v, str) and len(v) <= 200)})
            level, status = "DEFAULT", None
            if item.is_error:
                level, status = "ERROR", item.output if isinstance(item.output, str) else json.dumps(item.output, ensure_ascii=False)
            elif not item.has_result:
                level, status = "WARNING", "no tool result in the transcript (interrupted or still running)"
            end = item.end or turn_end or item.start
            obs.append(_obs(tool_id, parent_id, "tool", item.name, item.start, end, input=item.input, output=item.output, metadata=meta, level=level, status=status))
            if item.agent is not None:
                obs.extend(agent_observations(item, trace_id, tool_id))
        elif isinstance(item, Event):
            obs.append(_obs(observation_id(trace_id, "event", item.uid), parent_id, "event", item.name, item.ts, item.ts,
                            input=item.input, level=item.level, metadata=item.metadata))
    return obs


def agent_observations(call: ToolCall, trace_id: str, parent_id: str) -> list[dict]:
    agent = call.agent
    natural = call.agent_run or call.agent_id or call.id
    agent_obs_id = observation_id(trace_id, "agent", natural)
    meta = {"agent_id": call.agent_id, **{k: v for k, v in call.agent_meta.items() if isinstance(v, (str, int, float, bool))}}
    description = call.agent_meta.get("description") or (call.input or {}).get("description") if isinstance(call.input, dict) else None
    agent_type = call.agent_meta.get("agentType") or ((call.input or {}).get("subagent_type") if isinstance(call.input, dict) else None)
    name = "Subagent: " + str(description or agent_type or natural)
    end = max(agent.end, agent.last_row_ts or "") or agent.start
    meta["complete"] = agent.looks_complete()
    out = [_obs(agent_obs_id, parent_id, "agent", name, agent.start, end, input=prompt_text(agent.prompt), output=agent.final_text, metadata=meta)]
    out.extend(turn_observations(agent, trace_id, agent_obs_id, end))
    return out


def _obs(oid, parent, typ, name, start, end, *, input=None, output=None, metadata=None, level="DEFAULT", status=None, model=None, usage=None, completion_start=None) -> dict:
    start = start or end
    end = end or start
    if end and start and end < start:
        end = start
    return {
        "id": oid, "parent_id": parent, "type": typ, "name": name, "start": start, "end": end,
        "input": input, "output": output, "metadata": metadata or {}, "level": level, "status_message": status,
        "model": model, "usage_details": usage, "completion_start_time": completion_start if typ == "generation" else None,
    }


def turn_record(turn: Turn, ctx: TraceContext, event: HookEvent | None = None) -> dict:
    """A turn as one self-contained queue record (docs/design.md, "Queue record")."""
    trace_id = ctx.trace_id
    root_id = observation_id(trace_id, "root", turn.key)
    prompt = prompt_text(turn.prompt)
    if turn.command_expansion:
        prompt = prompt + "\n\n" + turn.command_expansion
    output = turn.final_text
    if not output:
        # a turn that ended in an API error: show the error text Claude Code showed the user
        output = next((g.text for g in reversed(turn.items) if isinstance(g, Generation) and g.synthetic and g.text), "")
    complete = turn.looks_complete()
    meta_extra: dict = {}
    if event is not None and event.name == "Stop" and event.last_assistant_message and not turn.finished:
        on_disk = output.strip()
        if event.last_assistant_message.strip() != on_disk:
            # Stop ran before Claude Code flushed the final answer: use what the event says
            output, complete = event.last_assistant_message, False
            meta_extra["output_source"] = "last_assistant_message"
    row = turn.meta_row
    end = max(turn.end, turn.last_row_ts or "") or turn.start
    trace_meta = {
        "project": ctx.project, "cwd": row.get("cwd") or "", "git_branch": row.get("gitBranch") or "",
        "claude_code_version": row.get("version") or "", "permission_mode": row.get("permissionMode") or (event.permission_mode if event else ""),
        "entrypoint": row.get("entrypoint") or "", "prompt_id": row.get("promptId") or "", "turn_number": ctx.turn_number,
        "turn_kind": turn.kind,
    }
    root_meta = {**trace_meta, "complete": complete, "interrupted": turn.interrupted, "hook_version": HOOK_VERSION, **meta_extra}
    if turn.hook_durations_ms:
        root_meta["stop_hook_durations_ms"] = turn.hook_durations_ms
    level = "WARNING" if turn.interrupted else "DEFAULT"
    root = _obs(root_id, None, "span", turn_title(turn), turn.start, end, input=prompt, output=output, metadata=root_meta, level=level,
                status="interrupted by the user" if turn.interrupted else None)
    observations, seen_ids = [], set()
    for ob in [root] + turn_observations(turn, trace_id, root_id, end):
        if ob["id"] not in seen_ids:  # a record with a duplicate id could never be delivered
            seen_ids.add(ob["id"])
            observations.append(ob)
    tags = ["claude-code"] + ([ctx.project] if ctx.project else [])
    if turn.kind == "task-notification":
        tags.append("task-notification")
    return {
        "v": RECORD_VERSION,
        "key": f"turn:{trace_id}",
        "kind": "turn",
        "trace": {"id": trace_id, "name": turn_title(turn), "session_id": ctx.session_id, "user_id": ctx.user_id, "tags": tags,
                  "metadata": {k: v for k, v in trace_meta.items() if v not in ("", None)}},
        "observations": observations,
    }


_PROJECT_CACHE: dict[str, str] = {}


def project_name(cwd: str) -> str:
    """Git top level's folder name when cwd is in a repository, else cwd's folder name."""
    if not cwd:
        return ""
    if cwd in _PROJECT_CACHE:
        return _PROJECT_CACHE[cwd]
    path = os.path.abspath(cwd)
    name = os.path.basename(path.rstrip(os.sep)) or path
    probe = path
    for _ in range(64):
        if os.path.exists(os.path.join(probe, ".git")):
            name = os.path.basename(probe.rstrip(os.sep)) or probe
            break
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    _PROJECT_CACHE[cwd] = name
    return name


# ============================================================================ redaction

# Transcripts are plaintext and hold secrets verbatim (cat .env, env dumps, curl commands):
# everything queued or sent passes through the Redactor first. Rules are anchored on literal
# needles and compiled once, so megabytes of tool output cost well under 0.5 s per MB.

class _LazyRe:
    """A regex compiled on first use: most rules never fire in a given hook run, and compiling
    all of them up front would cost every run several milliseconds."""

    __slots__ = ("_args", "_rx")

    def __init__(self, *args):
        self._args, self._rx = args, None

    def __getattr__(self, name: str):
        rx = self._rx
        if rx is None:
            rx = self._rx = re.compile(*self._args)
        return getattr(rx, name)


REDACTION_KINDS = (
    "private-key", "anthropic-key", "langfuse-secret-key", "openai-key", "github-token",
    "gitlab-token", "slack-token", "slack-webhook", "google-api-key", "stripe-key",
    "aws-access-key", "aws-secret-key", "jwt", "huggingface-token", "npm-token",
    "authorization", "bearer-token", "url-password", "basic-auth", "assignment", "secret-field",
    "custom",
)


def _marker(kind):
    return "[REDACTED:%s]" % kind


def _after(prefix_len):
    # Left word boundary checked after a literal prefix of this length, so the engine can
    # still jump straight to the literal.
    return r"(?<![A-Za-z0-9_\-][\s\S]{%d})" % prefix_len


# (kind, literals of which one must occur, regex). One scan per rule: each regex starts with a
# literal, which the engine finds far faster than a combined alternation could.
_TOKEN_RULES = tuple((kind, needles, _LazyRe(pattern)) for kind, needles, pattern in (
    ("anthropic-key", ("sk-ant-",), r"sk-ant-" + _after(7) + r"[A-Za-z0-9_\-]{16,}"),
    ("langfuse-secret-key", ("sk-lf-",), r"sk-lf-" + _after(6) + r"[A-Za-z0-9_\-]{8,}"),
    ("openai-key", ("sk-",), r"sk-" + _after(3) + r"(?!ant-|lf-)[A-Za-z0-9_\-]{20,}"),
    ("github-token", ("gh",), r"gh[pousr]_" + _after(4) + r"[A-Za-z0-9]{30,}"),
    ("github-token", ("github_pat_",), r"github_pat_" + _after(11) + r"[A-Za-z0-9_]{30,}"),
    ("gitlab-token", ("glpat-",), r"glpat-" + _after(6) + r"[A-Za-z0-9_\-]{20,}"),
    ("slack-token", ("xox",), r"xox[abeoprs]-" + _after(5) + r"[A-Za-z0-9\-]{10,}"),
    ("slack-token", ("xapp-",), r"xapp-" + _after(5) + r"[0-9]-[A-Za-z0-9\-]{10,}"),
    ("google-api-key", ("AIza",), r"AIza" + _after(4) + r"[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])"),
    ("stripe-key", ("_live_", "_test_"),
     r"[sr]k_(?:live|test)_" + _after(8) + r"[0-9A-Za-z]{10,}"),
    ("stripe-key", ("whsec_",), r"whsec_" + _after(6) + r"[0-9A-Za-z]{20,}"),
    ("aws-access-key", ("AKIA", "ASIA", "ABIA", "ACCA"),
     r"A(?:KIA|SIA|BIA|CCA)" + _after(4) + r"[A-Z0-9]{16}(?![A-Za-z0-9])"),
    ("jwt", ("eyJ",),
     r"eyJ" + _after(3) + r"[A-Za-z0-9_\-]{7,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"),
    ("huggingface-token", ("hf_",), r"hf_" + _after(3) + r"[A-Za-z0-9]{30,}"),
    ("npm-token", ("npm_",), r"npm_" + _after(4) + r"[A-Za-z0-9]{36}(?![A-Za-z0-9])"),
))

# One search answers "could any token rule match?" for the many short strings of a transcript;
# long texts use the per-rule literal checks instead (cheaper than an alternation over MBs).
_TOKEN_TRIGGER_RE = _LazyRe("|".join(sorted(
    {re.escape(needle) for _, needles, _ in _TOKEN_RULES for needle in needles})))
_SHORT_TEXT = 4096

_SLACK_WEBHOOK_RE = _LazyRe(
    r"(https://hooks\.slack\.com/(?:services|workflows|triggers)/)([A-Za-z0-9_/\-]{10,512})")

_PEM_BEGIN_RE = _LazyRe(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
_PEM_END_RE = _LazyRe(r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
_PEM_MAX_BODY = 64 * 1024
# A block cut off before its END line (head -c, truncated tool output): redact what follows.
_PEM_ORPHAN_BODY_RE = _LazyRe(r"[A-Za-z0-9+/=\\\s:,\-]{0,%d}" % _PEM_MAX_BODY)

# Case-insensitive rules below run on an ASCII-lowercased copy of the text.
_AUTH_HEADER_RE = _LazyRe(
    r"authorization(?<![a-z0-9_][\s\S]{13})"
    r"\\?[\"']?[ \t]{0,8}[:=][ \t]{0,8}\\?[\"']?"
    r"(?:(?P<scheme>bearer|basic|token|bot|apikey|negotiate)[ \t]+)?"
    r"(?P<cred>[^\s'\"\\,;]{1,8192})"
)
_BEARER_RE = _LazyRe(
    r"bearer(?<![a-z0-9_][\s\S]{6})[ \t]+(?P<cred>[a-z0-9\-._~+/]{16,8192}=*)")
_URL_PASSWORD_RE = _LazyRe(
    r"://(?P<user>[^\s:/?#@'\"<>\[\]\\]{0,256}):(?P<pw>[^\s/?#@'\"<>\\]{1,1024})@")
# curl -u / --user user:password (checked to be on a curl command line; `docker run -u 1000:1000`
# and `sort -u` are not credentials).
_CURL_USER_RE = _LazyRe(
    r"-(?<![^\s'\"][\s\S])(?:-user|u)(?:[ \t]+|=)(?P<q>['\"]?)"
    r"(?P<user>[^\s:'\"]{1,256}):(?P<pw>[^\s'\"]{1,1024})")
_ASSIGN_KEY_RE = _LazyRe(
    r"(?:pass|secret|token|key|pwd|auth)[a-z0-9_.\-]{0,60}"
    r"(?P<q>\\?[\"']?)(?P<sep>[ \t]{0,8}(?:=>|:=|=(?!=)|:(?!:))[ \t]{0,8})"
)
_ASSIGN_VALUE_RE = _LazyRe(
    r"(?P<pfx>[bBrRuUfF]{0,2})(?:"
    r"\"(?P<dqv>[^\"\\\n]{0,8192}(?:\\[^\n][^\"\\\n]{0,8192}){0,64})\""
    # The same inside a JSON-encoded string (a raw transcript line): \"value\".
    r"|\\\"(?P<eqv>[^\"\\\n]{0,8192}(?:\\[^\"\n][^\"\\\n]{0,8192}){0,64})\\\""
    r"|'(?P<sqv>[^'\n]{0,8192})'"
    r")"
    r"|(?P<bare>[^\s'\"`,;\\]{1,8192})"
)
_NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
_BRACKET_RE = _LazyRe(r"[()\[\]{}]")
_DIGIT_RE = _LazyRe(r"[0-9]")

_SECRET_LAST = frozenset((
    "password", "passwd", "passphrase", "secret", "token", "apikey", "accesskey", "secretkey",
    "privatekey", "authorization", "auth", "authtoken", "credential",
))
_SECRET_SUFFIXES = ("password", "passwd", "secret", "token")
_KEY_QUALIFIERS = frozenset((
    "api", "access", "secret", "private", "auth", "encryption", "signing", "master", "app",
    "session", "hmac", "webhook", "shared", "client",
))
# Tokenizer and usage vocabulary ("eos_token", "max_token"): not credentials.
_NOT_SECRET_TOKEN_QUALIFIERS = frozenset((
    "max", "min", "num", "total", "count", "input", "output", "cancel", "cancellation", "stop",
    "eos", "bos", "pad", "unk", "sep", "cls", "mask", "special", "start", "end", "next", "page",
    "continuation", "last", "first",
))
_CODE_TYPE_WORDS = frozenset((
    "str", "string", "int", "integer", "number", "bool", "boolean", "bytes", "any", "object",
    "unknown", "never", "void", "text", "varchar", "char", "secretstr", "float", "dict", "list",
    "optional", "required", "password", "self", "this", "cls", "env", "value", "val", "type",
))
_PLACEHOLDER_WORDS = frozenset((
    "none", "null", "nil", "undefined", "true", "false", "yes", "no", "on", "off", "required",
    "optional", "empty", "redacted", "hidden", "masked", "placeholder", "example", "todo", "tbd",
    "changeme", "secret", "password", "token", "string", "str",
))
_PLACEHOLDER_CHARS = frozenset("xX*.-_#?… ")
_TEMPLATE_RE = _LazyRe(r"\$\(|\$\{?[A-Za-z_]|\{\{|\{[A-Za-z_][\w.]*\}|%\([a-z_]+\)s|%s")
_IDENT_RE = _LazyRe(r"[A-Za-z_$][A-Za-z0-9_$]*")
_DOTTED_RE = _LazyRe(r"[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*)+")
_CAMEL_RE = _LazyRe(r"(?<=[a-z0-9])(?=[A-Z])")
_NAME_SPLIT_RE = _LazyRe(r"[^a-z0-9]+")


def _name_segments(name):
    name = _CAMEL_RE.sub("_", name.strip().strip("\"'$-")).lower()
    return [s for s in _NAME_SPLIT_RE.split(name) if s]


@functools.lru_cache(maxsize=4096)
def is_secret_name(name):
    """True when a key / variable / header name says its value is a credential.

    Looks at the last word of the name so ``GITHUB_TOKEN``, ``clientSecret``, ``x-api-key``,
    ``PGPASSWORD`` match while ``input_tokens``, ``token_count``, ``PUBLIC_KEY``, ``sort_key``,
    ``eos_token`` and ``PWD`` do not.
    """
    segs = _name_segments(name)
    if not segs:
        return False
    last = segs[-1]
    prev = segs[-2] if len(segs) > 1 else ""
    if last in ("token", "auth") or last.endswith("token"):
        return prev not in _NOT_SECRET_TOKEN_QUALIFIERS
    if last in _SECRET_LAST or last.endswith(_SECRET_SUFFIXES):
        return True
    if last in ("pwd", "pass", "pw") and prev:
        return True
    if last == "key" and prev in _KEY_QUALIFIERS:
        return True
    return False


@functools.lru_cache(maxsize=1024)
def _is_authorization_name(name):
    segs = _name_segments(name)
    return bool(segs) and segs[-1] == "authorization"


def _is_placeholder(value):
    s = value.strip().strip("\"'")
    if not s:
        return True
    if "[REDACTED:" in s or "..." in s or "…" in s:
        return True
    if s[0] == "<":
        return True
    if _TEMPLATE_RE.search(s):
        return True
    low = s.lower()
    if low in _PLACEHOLDER_WORDS:
        return True
    if len(s) >= 3 and (len(set(s)) == 1 or set(s) <= _PLACEHOLDER_CHARS):
        return True
    if low.startswith("your") or low.endswith(("_here", "-here")):
        return True
    return False


_CREDENTIAL_CHAR_RE = _LazyRe(r"[0-9+/=_\-]|[a-z][A-Z]")


def _credential_like(value):
    """Random-looking rather than a prose word: 'Authorization: header' is not a credential."""
    return len(value) >= 16 or _CREDENTIAL_CHAR_RE.search(value) is not None


def _env_style(name):
    stripped = name.strip("\"'")
    if stripped.startswith("--"):
        return True
    return any(c.isalpha() for c in stripped) and stripped == stripped.upper()


@functools.lru_cache(maxsize=1024)
def _assignment_marker(name):
    if "".join(_name_segments(name)).endswith("secretaccesskey"):
        return _marker("aws-secret-key")
    return _marker("assignment")


def _bare_value_is_secret(name, value):
    """Unquoted values: tell a credential from a code reference (``token=token``,
    ``api_key=settings.API_KEY``, ``password: str``, ``get_token()``)."""
    if _BRACKET_RE.search(value):
        return False
    has_digit = _DIGIT_RE.search(value) is not None
    if not has_digit and _DOTTED_RE.fullmatch(value):
        return False
    if _IDENT_RE.fullmatch(value) and not has_digit:
        if _env_style(name):
            return True
        low = value.lower()
        if low in _CODE_TYPE_WORDS or (len(low) >= 3 and low in name.lower()):
            return False
        if "_" in value.strip("_") or "$" in value or _CAMEL_RE.search(value):
            return False
    return True


def _ascii_lower(text):
    low = text.lower()
    # A few non-ASCII characters (U+0130) lowercase to two code points; positions found in the
    # lowered copy must map 1:1 to the original.
    if len(low) != len(text):
        low = "".join(c.lower() if c.isascii() else c for c in text)
    return low


class Redactor:
    """Replaces credentials with ``[REDACTED:<kind>]``. Build once per run and reuse.

    ``extra_patterns``: user regexes (a list, or one string with one regex per line). The whole
    match is replaced by ``[REDACTED:custom]``, or only the named group ``secret`` when the
    pattern has one. An invalid pattern raises ValueError naming it.
    """

    def __init__(self, enabled=True, extra_patterns=None):
        self.enabled = bool(enabled)
        if isinstance(extra_patterns, str):
            extra_patterns = extra_patterns.splitlines()
        self._extra = []
        for pattern in extra_patterns or ():
            if not isinstance(pattern, str):
                raise ValueError("redaction pattern %r is not a string" % (pattern,))
            if not pattern.strip():
                continue
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    "invalid redaction pattern %r in CC_LANGFUSE_REDACT_PATTERNS: %s"
                    % (pattern, exc)) from None
            if compiled.fullmatch(""):
                raise ValueError(
                    "redaction pattern %r matches the empty string; it would mark every "
                    "position of every text (CC_LANGFUSE_REDACT_PATTERNS)" % (pattern,))
            self._extra.append(compiled)

    # -- public API ------------------------------------------------------------------------

    def redact_text(self, text):
        """Return (redacted text, number of secrets replaced)."""
        if not self.enabled or not isinstance(text, str) or not text:
            return text, 0
        total = 0
        for compiled in self._extra:
            text, n = self._apply_custom(compiled, text)
            total += n
        for rule in (self._pem, self._tokens, self._slack_webhook, self._url_password,
                     self._curl_user):
            text, n = rule(text)
            total += n
        # The case-insensitive rules share one lowercased copy, redone only after a change.
        low = None
        for rule in (self._auth_header, self._bearer, self._assignments):
            if low is None:
                low = _ascii_lower(text)
            text, n = rule(text, low)
            if n:
                total += n
                low = None
        return text, total

    def redact_value(self, obj):
        """Walk a JSON-like value; return (new value, count). Dict keys are kept; the value of
        a key named like a credential (``password``, ``api_key``, ``Authorization``) is
        replaced whole. The input is not modified."""
        if not self.enabled:
            return obj, 0
        return self._walk(obj)

    # -- walking ---------------------------------------------------------------------------

    def _walk(self, obj):
        if isinstance(obj, str):
            return self.redact_text(obj)
        if isinstance(obj, dict):
            out, total = {}, 0
            for key, value in obj.items():
                if isinstance(key, str) and is_secret_name(key):
                    new, n = self._secret_field(key, value)
                else:
                    new, n = self._walk(value)
                out[key] = new
                total += n
            return out, total
        if isinstance(obj, (list, tuple)):
            out, total = [], 0
            for value in obj:
                new, n = self._walk(value)
                out.append(new)
                total += n
            return out, total
        return obj, 0

    def _secret_field(self, key, value):
        if isinstance(value, bool) or value is None:
            return value, 0
        if isinstance(value, (int, float)):
            return _marker("secret-field"), 1
        if not isinstance(value, str):
            return self._walk(value)
        if _is_placeholder(value):
            return value, 0
        if _is_authorization_name(key):
            scheme, sep, cred = value.strip().partition(" ")
            if sep and cred and " " not in cred.strip():
                if _is_placeholder(cred):
                    return value, 0
                kind = "bearer-token" if scheme.lower() == "bearer" else "authorization"
                return scheme + " " + _marker(kind), 1
            return _marker("authorization"), 1
        return _marker("secret-field"), 1

    # -- rules -----------------------------------------------------------------------------

    @staticmethod
    def _apply_custom(compiled, text):
        count = 0
        has_secret_group = "secret" in compiled.groupindex

        def repl(m):
            nonlocal count
            if has_secret_group and m.group("secret") is not None:
                start, end = m.span("secret")
                if start == end:
                    return m.group(0)
                count += 1
                return (text[m.start():start] + _marker("custom") + text[end:m.end()])
            if m.start() == m.end():
                return ""
            count += 1
            return _marker("custom")

        return compiled.sub(repl, text), count

    @staticmethod
    def _pem(text):
        if "PRIVATE KEY" not in text:
            return text, 0
        parts, pos, count = [], 0, 0
        end_match = None
        for begin in _PEM_BEGIN_RE.finditer(text):
            if begin.start() < pos:
                continue
            # Reuse the END found for an earlier BEGIN while it is still ahead: one forward
            # scan over the text however many BEGIN lines there are.
            if end_match is None or end_match.start() < begin.end():
                end_match = _PEM_END_RE.search(text, begin.end())
            if end_match is not None and end_match.start() - begin.end() <= _PEM_MAX_BODY:
                stop = end_match.end()
            else:
                stop = _PEM_ORPHAN_BODY_RE.match(text, begin.end()).end()
            parts.append(text[pos:begin.start()])
            parts.append(_marker("private-key"))
            pos = stop
            count += 1
        if not count:
            return text, 0
        parts.append(text[pos:])
        return "".join(parts), count

    @staticmethod
    def _tokens(text):
        total = 0
        if len(text) <= _SHORT_TEXT and _TOKEN_TRIGGER_RE.search(text) is None:
            return text, 0
        for kind, needles, regex in _TOKEN_RULES:
            if not any(needle in text for needle in needles):
                continue
            count = 0

            def repl(m, kind=kind):
                nonlocal count
                value = m.group(0)
                if kind == "openai-key":
                    body = value[3:]
                    if not (any(c.isdigit() for c in body) and any(c.isalpha() for c in body)):
                        return value
                count += 1
                return _marker(kind)

            text = regex.sub(repl, text)
            total += count
        return text, total

    @staticmethod
    def _slack_webhook(text):
        if "hooks.slack.com" not in text:
            return text, 0
        return _SLACK_WEBHOOK_RE.subn(lambda m: m.group(1) + _marker("slack-webhook"), text)

    @staticmethod
    def _spans(text, regex, decide, haystack=None):
        """Replace the span a rule's ``decide(text, match)`` returns: (start, end, replacement)
        or None to keep the text. The regex runs on ``haystack`` (the lowercased copy) if given."""
        if haystack is None:
            haystack = text
        parts, pos, count = [], 0, 0
        search_from = 0
        while True:
            m = regex.search(haystack, search_from)
            if m is None:
                break
            found = decide(text, m)
            if found is None:
                search_from = m.end() if m.end() > m.start() else m.start() + 1
                continue
            start, end, replacement = found
            parts.append(text[pos:start])
            parts.append(replacement)
            pos = end
            search_from = max(end, m.end())
            count += 1
        if not count:
            return text, 0
        parts.append(text[pos:])
        return "".join(parts), count

    @classmethod
    def _auth_header(cls, text, low):
        def decide(original, m):
            start, end = m.span("cred")
            cred = original[start:end]
            if _is_placeholder(cred):
                return None
            scheme = m.group("scheme")
            if not _credential_like(cred):
                return None
            kind = "bearer-token" if scheme == "bearer" else "authorization"
            return start, end, _marker(kind)

        return cls._spans(text, _AUTH_HEADER_RE, decide, low)

    @classmethod
    def _bearer(cls, text, low):
        def decide(original, m):
            start, end = m.span("cred")
            cred = original[start:end]
            if not any(c.isdigit() for c in cred) or _is_placeholder(cred):
                return None
            return start, end, _marker("bearer-token")

        return cls._spans(text, _BEARER_RE, decide, low)

    @classmethod
    def _url_password(cls, text):
        if "://" not in text:
            return text, 0

        def decide(original, m):
            start, end = m.span("pw")
            if _is_placeholder(original[start:end]):
                return None
            return start, end, _marker("url-password")

        return cls._spans(text, _URL_PASSWORD_RE, decide)

    @classmethod
    def _curl_user(cls, text):
        if "curl" not in text:
            return text, 0

        def decide(original, m):
            line_start = max(original.rfind("\n", 0, m.start()), m.start() - 2000, 0)
            if "curl" not in original[line_start:m.start()]:
                return None
            start, end = m.span("pw")
            quote = m.group("q")
            if quote:
                closing = original.find(quote, start, start + 1024)
                if closing != -1 and "\n" not in original[start:closing]:
                    end = closing
            if _is_placeholder(original[start:end]):
                return None
            return start, end, _marker("basic-auth")

        return cls._spans(text, _CURL_USER_RE, decide)

    @classmethod
    def _assignments(cls, text, low):
        def decide(original, m):
            # The regex matched from the keyword on; walk back to the start of the name.
            before = original[max(0, m.start() - 80):m.start()]
            name_start = m.start() - (len(before) - len(before.rstrip(_NAME_CHARS)))
            name_end = m.start("q")
            name = original[name_start:name_end]
            # Authorization values ("Bearer <token>") belong to _auth_header.
            if not is_secret_name(name) or _is_authorization_name(name):
                return None
            v = _ASSIGN_VALUE_RE.match(original, m.end())
            if v is None:
                return None
            if v.group("bare") is not None:
                start, end = v.span("bare")
                value = original[start:end]
                if name_start and original[name_start - 1] in "?&":
                    # A URL query parameter ends at the next "&"; in a .env file "&" is data.
                    amp = value.find("&")
                    if amp != -1:
                        end -= len(value) - amp
                        value = value[:amp]
                if _is_placeholder(value):
                    return None
                stripped = value.rstrip(".,:)]}>")
                if stripped != value:
                    end -= len(value) - len(stripped)
                    value = stripped
                    if not value or _is_placeholder(value):
                        return None
                if not _bare_value_is_secret(name, value):
                    return None
            else:
                group = next(g for g in ("dqv", "eqv", "sqv") if v.group(g) is not None)
                start, end = v.span(group)
                value = original[start:end]
                if _is_placeholder(value):
                    return None
            return start, end, _assignment_marker(name)

        return cls._spans(text, _ASSIGN_KEY_RE, decide, low)


_DEFAULT_REDACTOR = Redactor()


def redact_text(text, redactor=None):
    """Module-level shortcut with the default rules: (text, count)."""
    return (redactor or _DEFAULT_REDACTOR).redact_text(text)


def redact_value(obj, redactor=None):
    return (redactor or _DEFAULT_REDACTOR).redact_value(obj)


# -- truncation ----------------------------------------------------------------------------

def truncate_field(value, max_chars):
    """Cut a string longer than ``max_chars``; return (value, info or None).

    info = {"original_length": n, "sha256": hex of the whole original as UTF-8} goes into the
    observation metadata so the full text can be matched later. ``max_chars`` None or <= 0
    means no limit. Run after redaction so the hash never covers a raw secret.
    """
    if not isinstance(value, str) or not max_chars or max_chars <= 0 or len(value) <= max_chars:
        return value, None
    # surrogatepass: json.loads accepts lone surrogates (\ud83d) that plain UTF-8 rejects.
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    cut = value[:max_chars] + "…[truncated: %d chars, sha256 %s…]" % (len(value), digest[:16])
    return cut, {"original_length": len(value), "sha256": digest}


def truncate_json_value(value, max_chars):
    """Like truncate_field for any JSON-like value: strings are cut directly; other values are
    kept as they are unless their compact JSON form exceeds the limit, in which case that JSON
    text is cut and returned (a string) with the info."""
    if isinstance(value, str):
        return truncate_field(value, max_chars)
    if value is None or isinstance(value, (bool, int, float)) or not max_chars or max_chars <= 0:
        return value, None
    serialised = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    if len(serialised) <= max_chars:
        return value, None
    return truncate_field(serialised, max_chars)


# -- images / documents ----------------------------------------------------------------------

def _base64_decoded_size(data):
    length = len(data)
    # Whitespace is not data; counting is cheap next to decoding megabytes.
    length -= data.count("\n") + data.count("\r") + data.count(" ") + data.count("\t")
    padding = 2 if data.rstrip().endswith("==") else 1 if data.rstrip().endswith("=") else 0
    return max(0, length * 3 // 4 - padding)


def image_placeholder(block):
    """Short text standing in for an image (or document) content block; never the base64.

    ``{"type":"image","source":{"type":"base64","media_type":"image/png","data":...}}``
    -> ``[image: image/png, 123456 bytes]``; URL sources -> ``[image: url <url>]``.
    """
    label = "image"
    if isinstance(block, dict) and isinstance(block.get("type"), str) and block["type"]:
        label = block["type"]
    source = block.get("source") if isinstance(block, dict) else None
    if not isinstance(source, dict):
        return "[%s]" % label
    kind = source.get("type")
    media_type = source.get("media_type") or "unknown type"
    if kind == "base64" and isinstance(source.get("data"), str):
        return "[%s: %s, %d bytes]" % (label, media_type, _base64_decoded_size(source["data"]))
    if kind == "url" and isinstance(source.get("url"), str):
        url = source["url"]
        if url.startswith("data:"):
            header, _, payload = url.partition(",")
            media_type = header[5:].split(";")[0] or "unknown type"
            return "[%s: %s, %d bytes]" % (label, media_type, _base64_decoded_size(payload))
        if len(url) > 500:
            url = url[:500] + "…"
        return "[%s: url %s]" % (label, url)
    if kind == "file" and isinstance(source.get("file_id"), str):
        return "[%s: file %s]" % (label, source["file_id"])
    if kind == "text":
        return "[%s: text]" % label
    return "[%s: %s]" % (label, media_type if kind == "base64" else (kind or "unknown source"))


STATUS_MESSAGE_CHARS = 500


def sanitize_record(record: dict, redactor: Redactor, max_chars: int) -> dict:
    """Redact secrets and cut oversized fields in every text a record carries."""
    total = 0
    for ob in record["observations"]:
        ob["name"], n = redactor.redact_text(ob["name"])
        total += n
        for fname in ("input", "output", "metadata", "status_message"):
            value = ob.get(fname)
            if value is None:
                continue
            value, n = redactor.redact_value(value)
            total += n
            if fname == "status_message" and isinstance(value, str):
                value = value[:STATUS_MESSAGE_CHARS]  # cut after redaction, never through a secret
            if fname in ("input", "output"):
                value, info = truncate_json_value(value, max_chars)  # after redaction: a cut must not split a secret
                if info:
                    ob["metadata"][f"{fname}_truncated"] = info
            ob[fname] = value
    trace = record["trace"]
    trace["name"], n = redactor.redact_text(trace["name"])
    total += n
    trace["metadata"], n = redactor.redact_value(trace["metadata"])
    total += n
    if total and record["observations"] and record["observations"][0]["parent_id"] is None:
        record["observations"][0]["metadata"]["redactions"] = total
    return record


def record_rev(record: dict) -> str:
    body = {k: v for k, v in record.items() if k not in ("queued_at", "rev")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


# ============================================================================ locks, atomic files


class LockTimeout(Exception):
    pass


class FileLock:
    """An fcntl lock on a file; waits up to `timeout` seconds, never proceeds unlocked."""

    def __init__(self, path: str, timeout: float = LOCK_TIMEOUT_S):
        self.path, self.timeout = path, timeout
        self.fd: int | None = None

    def acquire(self, blocking: bool = True) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + (self.timeout if blocking else 0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.fd = fd
                return True
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
            if time.monotonic() >= deadline:
                os.close(fd)
                return False
            time.sleep(0.01)

    def release(self) -> None:
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None

    def __enter__(self):
        if not self.acquire():
            raise LockTimeout(self.path)
        return self

    def __exit__(self, *exc):
        self.release()


def write_atomic(path: str, data: bytes) -> None:
    """tmp + fsync + rename: readers see the old file or the new one, never half of one."""
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.close(fd)
    os.replace(tmp, path)
    try:
        dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def read_json_file(path: str, default: Any) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except (OSError, ValueError):
        return default


def now_iso() -> str:
    return iso_ms(_dt.datetime.now(_dt.timezone.utc))


# ============================================================================ queue


class Paths:
    def __init__(self, state_dir: str):
        self.dir = state_dir
        self.state = os.path.join(state_dir, "langfuse_state.json")
        self.queue = os.path.join(state_dir, "pending_traces.jsonl")
        self.dead = os.path.join(state_dir, "dead_traces.jsonl")
        self.sender_status = os.path.join(state_dir, "langfuse_sender.json")
        self.log = os.path.join(state_dir, "langfuse_hook.log")
        self.locks = os.path.join(state_dir, "locks")
        self.state_lock = os.path.join(self.locks, "state.lock")
        self.queue_lock = os.path.join(self.locks, "queue.lock")
        self.sender_lock = os.path.join(self.locks, "sender.lock")

    def session_lock(self, session_id: str) -> str:
        return os.path.join(self.locks, "session-" + hashlib.sha256(session_id.encode()).hexdigest()[:16] + ".lock")


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
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
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
    lines = []
    for r in records:
        r = dict(r, queued_at=stamp, rev=r.get("rev") or record_rev(r))
        lines.append(json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n")
    with FileLock(paths.queue_lock, timeout=lock_timeout):
        _append_lines(paths.queue, lines)


class QueueEntry(NamedTuple):
    line_no: int
    raw: bytes
    record: dict | None
    error: str = ""


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
                    rec = json.loads(line)
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
            _append_lines(paths.dead, [json.dumps(d, ensure_ascii=False).encode() + b"\n" for d in dead])
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


# ============================================================================ state


def state_key(session_id: str, path: str) -> str:
    return hashlib.sha256(f"{session_id}::{path}".encode()).hexdigest()[:24]


def load_state(paths: Paths) -> dict:
    data = read_json_file(paths.state, {})
    if not isinstance(data, dict) or not isinstance(data.get("transcripts"), dict):
        data = {"version": 1, "transcripts": {}}
    return data


def update_state_entry(paths: Paths, key: str, entry: dict) -> None:
    """Read-modify-write of one transcript's entry under the state lock (other sessions untouched)."""
    with FileLock(paths.state_lock, timeout=10):
        data = load_state(paths)
        data["transcripts"][key] = entry
        cutoff = time.time() - 30 * 86400
        data["transcripts"] = {k: v for k, v in data["transcripts"].items() if v.get("updated_epoch", time.time()) >= cutoff}
        write_atomic(paths.state, json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode())


MAX_EMITTED = 400


# ============================================================================ hook (critical path)


class CollectResult(NamedTuple):
    records: list
    entry: dict
    turns_seen: int = 0
    bad_lines: int = 0


def collect_records(event: HookEvent, entry: dict, settings: Settings, redactor: Redactor, log=None, sink=None) -> CollectResult:
    """New bytes of the session transcript -> new or changed turn records.

    Streams: one turn is held in memory at a time; records go to `sink` (default: the result's
    list). The trailing turn is emitted but not consumed: the next run re-reads it, so a turn
    that grows (Stop ladders, late flushes, background agents) is upserted under the same ids.
    """
    path = event.transcript_path
    entry = dict(entry or {})
    entry.setdefault("session_id", event.session_id)
    entry.setdefault("path", path)
    emitted: dict = dict(entry.get("emitted") or {})
    agents: dict = dict(entry.get("agents") or {})
    offset = int(entry.get("offset") or 0)
    turns_before = int(entry.get("turns_before") or 0)
    records: list[dict] = []
    sink = sink or records.append
    bad: list[int] = []
    finder = SubagentFinder(path, event.session_id)
    if not os.path.isfile(path):
        if log:
            log.warning("transcript %s does not exist (yet) or is not a file; nothing to read", path)
        return CollectResult([], entry)

    def emit(turn: Turn, number: int, ev: HookEvent | None) -> None:
        finder.attach(turn)
        tid = trace_id_for(event.session_id, turn.key)
        ctx = TraceContext(event.session_id, settings.user_id, project_name(turn.meta_row.get("cwd") or event.cwd), number, tid)
        rec = sanitize_record(turn_record(turn, ctx, ev), redactor, settings.max_field_chars)
        rev = record_rev(rec)
        for call in turn.tools.values():
            if call.name in AGENT_TOOL_NAMES and (call.agent_id or call.agent is not None):
                link = {"start": turn.start_offset, "end": turn.end_offset, "turn_number": number, "key": turn.key}
                agents[call.id] = link
                if call.agent_id:
                    agents[call.agent_id] = link
        if emitted.get(turn.key) != rev:
            rec["rev"] = rev
            emitted.pop(turn.key, None)
            emitted[turn.key] = rev
            sink(rec)
        if turn.kind == "task-notification":
            # the background agent it reports on has finished, so its file is complete now (at its
            # SubagentStop the last line often was not yet): refresh the turn that launched it
            text = prompt_text(turn.prompt)
            for rx in (TASK_TOOL_USE_RE, TASK_ID_RE):
                m = rx.search(text)
                link = agents.get(m.group(1)) if m else None
                if link and link["start"] < turn.start_offset:
                    reemit(link)
                    break

    def reemit(link: dict) -> None:
        with open(path, "rb") as f2:
            old = next(group_turns(iter_rows(f2, link["start"], link["end"])), None)
        if old is not None and old.key == link.get("key", old.key):
            emit(old, link["turn_number"], None)

    seen = 0
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        replaced = bool(entry.get("inode")) and entry.get("inode") != st.st_ino
        if st.st_size < offset or replaced or (offset and entry.get("tail") and _tail_hash(f, offset) != entry.get("tail")):
            # truncated (Claude Code drops a line after a streaming error), replaced, or cut and
            # regrown: the bytes before our offset are not the ones we read, so start over
            if log:
                log.info("transcript %s shrank or was rewritten (size %d, offset %d): re-reading from the start", path, st.st_size, offset)
            offset, turns_before = 0, 0
        new_offset, new_before = offset, turns_before
        previous: Turn | None = None
        for turn in group_turns(iter_rows(f, offset, bad_lines=bad), bad_lines=bad):
            if previous is not None:
                emit(previous, new_before + 1, None)
                new_offset, new_before = turn.start_offset, new_before + 1
            previous = turn
            seen += 1
        if previous is not None:
            # the trailing turn stays open: new_offset points at its first line
            new_offset = previous.start_offset
            if event.name == "SubagentStop" and not previous.looks_complete():
                pass  # mid-turn (a foreground agent finished): the parent's Stop will emit it
            else:
                emit(previous, new_before + 1, event if _event_is_about(event, previous) else None)

        if event.name == "SubagentStop" and event.agent_id:
            link = agents.get(event.agent_id) or agents.get(str(finder.meta_for_agent(event.agent_id).get("toolUseId") or ""))
            if link and link["start"] < new_offset:
                reemit(link)  # the turn that launched this background agent is behind us
        tail = _tail_hash(f, new_offset) if new_offset else ""

    if len(emitted) > MAX_EMITTED:
        emitted = dict(list(emitted.items())[-MAX_EMITTED:])
    if len(agents) > MAX_EMITTED:
        agents = dict(list(agents.items())[-MAX_EMITTED:])
    entry.update(offset=new_offset, turns_before=new_before, inode=st.st_ino, size_seen=st.st_size, emitted=emitted, agents=agents, tail=tail,
                 updated=now_iso(), updated_epoch=time.time(), cwd=event.cwd or entry.get("cwd", ""))
    return CollectResult(records, entry, seen, len(bad))


def _tail_hash(f, offset: int, span: int = 256) -> str:
    """Fingerprint of the bytes just before `offset`: tells a file rewritten under our cursor."""
    start = max(0, offset - span)
    f.seek(start)
    return hashlib.sha256(f.read(offset - start)).hexdigest()[:16]


def _event_is_about(event: HookEvent, turn: Turn) -> bool:
    """Does the event's last_assistant_message belong to this turn (and not to a prompt not yet on disk)?"""
    if event.name != "Stop":
        return False
    turn_prompt = turn.prompt_row.get("promptId")
    return not (event.prompt_id and turn_prompt and event.prompt_id != turn_prompt)


def run_hook(stdin_bytes: bytes, settings: Settings) -> None:
    log = LazyLog(settings)
    try:
        event = parse_event(stdin_bytes)
    except BadEvent as e:
        log.error("ignored a hook call: %s", e)
        return
    if settings.config_error:
        log.error("configuration: %s", settings.config_error)
    paths = Paths(settings.state_dir)
    ensure_state_dir(paths.dir)
    if event.name == "SubagentStop" and not event.agent_id:
        log.debug("SubagentStop without agent_id (a main-thread stop): the session's transcript is read as usual")
    key = state_key(event.session_id, event.transcript_path)
    lock = FileLock(paths.session_lock(event.session_id), timeout=LOCK_TIMEOUT_S)
    if not lock.acquire():
        log.warning("session %s is being processed by another hook run for over %.0fs: skipped this run; "
                    "the next Stop (or SessionEnd) picks the turns up, nothing is lost", event.session_id, LOCK_TIMEOUT_S)
        return
    try:
        state = load_state(paths)
        entry = state["transcripts"].get(key, {})
        try:
            redactor = Redactor(settings.redact, settings.redact_patterns)
        except ValueError as e:
            log.error("%s; fix CC_LANGFUSE_REDACT_PATTERNS. Using the built-in rules only.", e)
            redactor = Redactor(settings.redact, [])
        result = collect_records(event, entry, settings, redactor, log)
        if result.bad_lines:
            log.warning("skipped %d unreadable line(s) in %s", result.bad_lines, event.transcript_path)
        try:
            queue_append(paths, result.records)  # durable before the cursor moves
        except LockTimeout:
            log.warning("the queue was busy (a sender rewriting a large backlog); the cursor stays, the next run "
                        "queues these %d record(s); nothing is lost", len(result.records))
            return
        update_state_entry(paths, key, result.entry)
        log.debug("%s %s: %d turn(s) read, %d record(s) queued", event.name, event.session_id, result.turns_seen, len(result.records))
    finally:
        lock.release()
    if settings.enabled and os.path.exists(paths.queue) and os.path.getsize(paths.queue) > 0:
        start_sender(paths, settings, log)


def skip_while_disabled(stdin_bytes: bytes, settings: Settings) -> None:
    """Tracing is off (TRACE_TO_LANGFUSE=false): move the cursor past everything said so far,
    reading nothing, so that turning tracing back on never uploads what was said while it was off."""
    try:
        event = parse_event(stdin_bytes)
    except BadEvent:
        return
    if not os.path.isfile(event.transcript_path):
        return
    paths = Paths(settings.state_dir)
    ensure_state_dir(paths.dir)
    lock = FileLock(paths.session_lock(event.session_id), timeout=LOCK_TIMEOUT_S)
    if not lock.acquire():
        return  # the next run moves it
    try:
        key = state_key(event.session_id, event.transcript_path)
        entry = dict(load_state(paths)["transcripts"].get(key) or {}, session_id=event.session_id, path=event.transcript_path)
        with open(event.transcript_path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - READ_CHUNK))
            tail = f.read()
            end = size - (len(tail) - tail.rfind(b"\n") - 1) if b"\n" in tail else entry.get("offset", 0)
            entry.update(offset=end, inode=os.fstat(f.fileno()).st_ino, size_seen=size, tail=_tail_hash(f, end) if end else "",
                         updated=now_iso(), updated_epoch=time.time(), paused=True)
        entry.setdefault("emitted", {})
        update_state_entry(paths, key, entry)
    finally:
        lock.release()


def start_sender(paths: Paths, settings: Settings, log) -> None:
    """Start a detached sender unless one runs or the last failure asked us to wait."""
    probe = FileLock(paths.sender_lock, timeout=0)
    if not probe.acquire(blocking=False):
        return  # a sender is running; it re-checks the queue before it exits
    probe.release()
    status = read_json_file(paths.sender_status, {})
    if isinstance(status, dict) and time.time() < float(status.get("next_attempt_epoch") or 0):
        failed_keys = status.get("auth_failed_keys")
        if not failed_keys or failed_keys == key_fingerprint(settings):
            return  # backing off; keys that changed since an auth failure are tried at once
    python, command = sender_python(), "send"
    if not python:
        # plugin install without its venv yet: build it in the background, then send
        python, command = sys.executable, "bootstrap"
    spawn_detached([python, os.path.abspath(__file__), command], log)


def spawn_detached(argv: list[str], log) -> None:
    """A child that outlives Claude Code (own session, no terminal, no pipes back to the hook)."""
    # posix_spawn, not subprocess: the hook then needs no subprocess import (a few ms of every
    # Stop). Our own descriptors are close-on-exec (PEP 446); 0-2 go to /dev/null, so Claude Code
    # never waits on a pipe the sender holds; setsid detaches it from the session.
    null = os.devnull
    actions = [(os.POSIX_SPAWN_OPEN, 0, null, os.O_RDONLY, 0), (os.POSIX_SPAWN_OPEN, 1, null, os.O_WRONLY, 0),
               (os.POSIX_SPAWN_OPEN, 2, null, os.O_WRONLY, 0)]
    try:
        os.posix_spawn(argv[0], argv, dict(os.environ), file_actions=actions, setsid=True)
    except (OSError, AttributeError, TypeError) as e:
        log.error("could not start %s (%s); the queue is kept; run `%s drain`", argv[-1], e, self_command())


LANGFUSE_REQUIREMENT = "langfuse>=5,<6"


def self_command() -> str:
    """How a user runs this file's subcommands: the interpreter that has the SDK, then this file."""
    import shlex

    return f"{shlex.quote(sender_python() or sys.executable)} {shlex.quote(os.path.abspath(__file__))}"


def plugin_venv() -> str:
    data = os.environ.get("CLAUDE_PLUGIN_DATA")
    return os.path.join(data, "venv") if data else ""


def sender_python() -> str:
    """The interpreter with the SDK: the plugin's venv when run as a plugin, else our own."""
    venv = plugin_venv()
    if not venv:
        return sys.executable
    python = os.path.join(venv, "bin", "python")
    return python if os.access(python, os.X_OK) and os.path.exists(os.path.join(venv, ".langfuse-ready")) else ""


def bootstrap_main(settings: Settings) -> int:
    """Create the plugin's venv with the pinned SDK (once, lock-guarded), then run the sender."""
    import subprocess

    os.umask(0o077)
    log = get_logger(settings)
    venv = plugin_venv()
    if not venv:
        log.error("bootstrap needs CLAUDE_PLUGIN_DATA (it runs only for the plugin install)")
        return 1
    os.makedirs(os.path.dirname(venv), exist_ok=True)
    lock = FileLock(os.path.join(os.path.dirname(venv), "bootstrap.lock"), timeout=0)
    if not lock.acquire(blocking=False):
        return 0  # another bootstrap is installing
    try:
        if not sender_python():
            log.info("creating the plugin venv %s with %s (first use)", venv, LANGFUSE_REQUIREMENT)
            try:
                subprocess.run([sys.executable, "-m", "venv", venv], check=True, capture_output=True, timeout=300)
                subprocess.run([os.path.join(venv, "bin", "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                LANGFUSE_REQUIREMENT], check=True, capture_output=True, timeout=900)
            except (OSError, subprocess.SubprocessError) as e:
                detail = getattr(e, "stderr", b"") or b""
                log.error("could not create the plugin venv %s: %s %s; the queue is kept; the next hook run tries again",
                          venv, e, detail.decode("utf-8", "replace")[-500:] if isinstance(detail, bytes) else detail)
                return 1
            with open(os.path.join(venv, ".langfuse-ready"), "w") as f:
                f.write(LANGFUSE_REQUIREMENT + "\n")
    finally:
        lock.release()
    spawn_detached([os.path.join(venv, "bin", "python"), os.path.abspath(__file__), "send"], log)
    return 0


def key_fingerprint(settings: Settings) -> str:
    return hashlib.sha256(f"{settings.public_key}:{settings.secret_key}:{settings.base_url}".encode()).hexdigest()[:16]


def hook_main() -> None:
    """Hook mode: whatever happens, print nothing and exit 0."""
    os.umask(0o077)
    settings = None
    try:
        data = sys.stdin.buffer.read(64 * 1024 * 1024)
        settings = load_settings()
        if not settings.enabled:
            skip_while_disabled(data, settings)
            return
        run_hook(data, settings)
    except BaseException as e:  # the hook must never hurt Claude Code
        try:
            log = get_logger(settings or load_settings())
            log.exception("hook failed: %s (the transcript keeps the data; the next run retries)", e)
        except BaseException:
            pass


# ============================================================================ send

# One queue record -> Langfuse observations through the SDK 5.x, using only its supported
# extension points: our own TracerProvider whose IdGenerator hands out the record's trace and
# span ids (a resend upserts instead of duplicating); observations started with the public
# start_observation methods and ended with end(end_time=...); trace attributes on every span via
# propagate_attributes; and our own span_exporter, which rebuilds each finished span with the
# record's start time (the SDK has no public start time), encodes it with OpenTelemetry's OTLP
# encoder and POSTs it once itself, so it knows the HTTP status of every span and the queue, not
# the SDK's retry loop, decides what happens next.

# The SDK and OpenTelemetry are imported only here, in the background sender (they cost
# ~0.3 s); the hook's critical path never runs this.
_SDK_LOADED = False


def _import_sdk() -> None:
    global _SDK_LOADED, base64, gzip, math, threading, httpx, Langfuse, propagate_attributes
    global LANGFUSE_SDK_VERSION, otel_context, otel_trace, encode_spans, Resource, ReadableSpan, TracerProvider
    global SpanExporter, SpanExportResult, IdGenerator, ALWAYS_ON, send_log, _ENGINES_LOCK, _RecordIds, _RecordExporter
    if _SDK_LOADED:
        return
    import base64
    import gzip
    import logging
    import math
    import threading

    import httpx
    from langfuse import Langfuse, propagate_attributes
    from langfuse import __version__ as LANGFUSE_SDK_VERSION
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.id_generator import IdGenerator
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    send_log = logging.getLogger("claude_code_langfuse.send")
    _ENGINES_LOCK = threading.Lock()
    # the OTel extension points, subclassed once their base classes are importable
    _RecordIds = type("_RecordIds", (_RecordIdsBase, IdGenerator), {})
    _RecordExporter = type("_RecordExporter", (_RecordExporterBase, SpanExporter), {})
    _SDK_LOADED = True



TRACES_PATH = "/api/public/otel/v1/traces"

# Spans per flush of the SDK batch processor, and so at most per POST. The processor
# silently drops spans beyond its queue (2048 by default); flushing every 256 ended
# spans keeps a 1000+ observation turn far below that.
EXPORT_CHUNK = 256
# POST bodies are split before encoding when the span payload passes this (uncompressed)
# size, so one turn with big tool outputs does not hit proxy or server body limits.
MAX_POST_BYTES = 4 * 1024 * 1024
# propagate_attributes drops trace-level values longer than this (SDK 5.x).
TRACE_ATTR_MAX = 200

OBSERVATION_TYPES = frozenset(
    {"span", "generation", "tool", "agent", "event", "chain", "retriever", "evaluator",
     "embedding", "guardrail"}
)
GENERATION_LIKE = frozenset({"generation", "embedding"})
LEVELS = frozenset({"DEBUG", "DEFAULT", "WARNING", "ERROR"})
IS_APP_ROOT = "langfuse.internal.is_app_root"

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# The SDK keeps one client per public key per process (a second Langfuse(...) with the
# same key silently reuses the first one's pipeline), so the pipeline is per key too.
_ENGINES: dict[str, "_Engine"] = {}
_ENGINES_LOCK: Any = None  # created with the SDK imports


class SendSettings(NamedTuple):
    public_key: str
    secret_key: str
    base_url: str = "http://localhost:3050"
    timeout: float = 10.0

    def __repr__(self) -> str:  # never print the secret
        return f"SendSettings(public_key={self.public_key!r}, base_url={self.base_url!r}, timeout={self.timeout!r})"


class Delivery(NamedTuple):
    outcome: str  # "accepted" | "auth" | "retry" | "dead"
    http_status: Optional[int]
    detail: str


class BadRecord(ValueError):
    """The record itself is malformed: no server will ever take it."""


# --------------------------------------------------------------------------- record → plan


class _Obs(NamedTuple):
    id: str
    parent_id: Optional[str]
    type: str
    name: str
    start_ns: int
    end_ns: int
    kwargs: dict[str, Any]


class _Plan(NamedTuple):
    trace_id: str
    order: list[_Obs]  # parents before children
    trace_attributes: dict[str, Any]

    @property
    def times(self) -> dict[str, tuple[int, int, bool]]:
        return {o.id: (o.start_ns, o.end_ns, o.parent_id is not None) for o in self.order}


def _iso_to_datetime(text: Any, what: str) -> datetime:
    if not isinstance(text, str):
        raise BadRecord(f"{what} is not an ISO 8601 string: {text!r}")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadRecord(f"{what} is not an ISO 8601 time: {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _ns(moment: datetime) -> int:
    # Integer arithmetic: float seconds would make resends differ by a nanosecond.
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _clip(text: str, limit: int = TRACE_ATTR_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _metadata_value_fits(value: Any) -> bool:
    # Mirrors the SDK: every trace metadata value is JSON-encoded (strings included)
    # before its 200-char check, and longer ones are dropped with only a warning.
    if isinstance(value, str):
        encoded = json.dumps(value, ensure_ascii=False)
    else:
        encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return len(encoded) <= TRACE_ATTR_MAX


def _trace_attributes(trace: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split the record's trace fields into propagate_attributes kwargs and leftovers.

    Leftovers are trace metadata values too long to propagate; they go on the
    top observation(s) instead so nothing is dropped.
    """
    attrs: dict[str, Any] = {}
    if trace.get("name"):
        attrs["trace_name"] = _clip(str(trace["name"]))
    if trace.get("session_id"):
        attrs["session_id"] = _clip(str(trace["session_id"]))
    if trace.get("user_id"):
        attrs["user_id"] = _clip(str(trace["user_id"]))
    tags = [_clip(str(t)) for t in (trace.get("tags") or []) if t not in (None, "")]
    if tags:
        attrs["tags"] = list(dict.fromkeys(tags))
    short: dict[str, Any] = {}
    long: dict[str, Any] = {}
    for key, value in (trace.get("metadata") or {}).items():
        if value is None:
            continue
        (short if _metadata_value_fits(value) else long)[str(key)] = value
    if short:
        attrs["metadata"] = short
    return attrs, long


def build_plan(record: Any) -> _Plan:
    """Validate a queue record and order its observations; BadRecord if it can never be sent."""
    if not isinstance(record, dict):
        raise BadRecord("record is not a JSON object")
    trace = record.get("trace")
    if not isinstance(trace, dict):
        raise BadRecord("record has no trace object")
    trace_id = trace.get("id")
    if not isinstance(trace_id, str) or not _HEX32.match(trace_id) or not int(trace_id, 16):
        raise BadRecord(f"trace id must be 32 lowercase hex digits, not all zero: {trace_id!r}")
    raw_observations = record.get("observations")
    if not isinstance(raw_observations, list) or not raw_observations:
        raise BadRecord("record has no observations")

    trace_attrs, long_trace_metadata = _trace_attributes(trace)
    observations: dict[str, _Obs] = {}
    for index, raw in enumerate(raw_observations):
        where = f"observation {index}"
        if not isinstance(raw, dict):
            raise BadRecord(f"{where} is not an object")
        obs_id = raw.get("id")
        if not isinstance(obs_id, str) or not _HEX16.match(obs_id) or not int(obs_id, 16):
            raise BadRecord(f"{where}: id must be 16 lowercase hex digits, not all zero: {obs_id!r}")
        if obs_id in observations:
            raise BadRecord(f"{where}: duplicate observation id {obs_id}")
        parent_id = raw.get("parent_id")
        if parent_id is not None and (
            not isinstance(parent_id, str) or not _HEX16.match(parent_id) or not int(parent_id, 16)
        ):
            raise BadRecord(f"{where}: parent_id must be null or 16 lowercase hex digits: {parent_id!r}")
        obs_type = raw.get("type") or "span"
        if obs_type not in OBSERVATION_TYPES:
            raise BadRecord(f"{where}: unknown observation type {obs_type!r}")
        start = _iso_to_datetime(raw.get("start"), f"{where}.start")
        end = _iso_to_datetime(raw.get("end") or raw.get("start"), f"{where}.end")
        start_ns, end_ns = _ns(start), _ns(end)
        end_ns = max(end_ns, start_ns)  # a clock step must not make the span invalid

        kwargs: dict[str, Any] = {}
        for key in ("input", "output"):
            if raw.get(key) is not None:
                kwargs[key] = raw[key]
        metadata = raw.get("metadata")
        if metadata is not None:
            kwargs["metadata"] = metadata
        level = raw.get("level")
        if level in LEVELS and level != "DEFAULT":
            kwargs["level"] = level
        elif level not in (None, "DEFAULT"):
            send_log.warning("observation %s: unknown level %r sent as DEFAULT", obs_id, level)
        if raw.get("status_message") is not None:
            kwargs["status_message"] = str(raw["status_message"])
        if obs_type in GENERATION_LIKE:
            if raw.get("model"):
                kwargs["model"] = str(raw["model"])
            if isinstance(raw.get("usage_details"), dict):
                kwargs["usage_details"] = raw["usage_details"]
            if raw.get("completion_start_time"):
                kwargs["completion_start_time"] = _iso_to_datetime(
                    raw["completion_start_time"], f"{where}.completion_start_time"
                )
        observations[obs_id] = _Obs(
            id=obs_id,
            parent_id=parent_id,
            type=obs_type,
            name=str(raw.get("name") or obs_type),
            start_ns=start_ns,
            end_ns=end_ns,
            kwargs=kwargs,
        )

    children: dict[Optional[str], list[_Obs]] = {}
    tops: list[_Obs] = []
    for obs in observations.values():
        if obs.parent_id is None or obs.parent_id not in observations:
            tops.append(obs)  # trace root, or attached to a parent in another record
        else:
            children.setdefault(obs.parent_id, []).append(obs)
    if not tops:
        raise BadRecord("observations form a cycle: none is a root or attached outside the record")

    if long_trace_metadata:
        for top in tops:
            merged = dict(long_trace_metadata)
            if isinstance(top.kwargs.get("metadata"), dict):
                merged.update(top.kwargs["metadata"])
            top.kwargs["metadata"] = merged

    order: list[_Obs] = []
    stack = list(reversed(tops))
    while stack:
        obs = stack.pop()
        order.append(obs)
        stack.extend(reversed(children.get(obs.id, [])))
    if len(order) != len(observations):
        raise BadRecord("observations form a cycle through their parent_id links")
    return _Plan(trace_id=trace_id, order=order, trace_attributes=trace_attrs)


# --------------------------------------------------------------------------- ids


class _RecordIdsBase:
    """Gives each new span exactly the id the sender armed for it."""

    def __init__(self) -> None:
        self._trace_id: Optional[int] = None
        self._span_id: Optional[int] = None

    def arm(self, trace_id: str, span_id: str) -> None:
        self._trace_id, self._span_id = int(trace_id, 16), int(span_id, 16)

    def generate_span_id(self) -> int:
        span_id, self._span_id = self._span_id, None
        if span_id is None:
            raise RuntimeError("span created without an armed id (outside Sender.send?)")
        return span_id

    def generate_trace_id(self) -> int:
        if self._trace_id is None:
            raise RuntimeError("trace created without an armed id (outside Sender.send?)")
        return self._trace_id


# --------------------------------------------------------------------------- export


def _server_message(response: httpx.Response) -> str:
    try:
        payload = response.json()
        if isinstance(payload, dict):
            text = payload.get("message") or payload.get("error") or json.dumps(payload)
        else:
            text = json.dumps(payload)
    except ValueError:
        text = response.text
    text = " ".join(str(text).split())
    return text[:200]


def classify(status: int, base: str, message: str = "", retry_after: str = "") -> Delivery:
    """Map an HTTP status to the queue's outcome (docs/design.md, Sender contract)."""
    said = f": {message}" if message else ""
    if 200 <= status < 300:
        return Delivery("accepted", status, f"Langfuse at {base} accepted the spans (HTTP {status})")
    if status in (401, 403):
        why = "refused the keys" if status == 401 else "refused ingestion for these keys"
        return Delivery(
            "auth", status,
            f"Langfuse at {base} {why} (HTTP {status}{said}); check that CC_LANGFUSE_PUBLIC_KEY and "
            "CC_LANGFUSE_SECRET_KEY belong to a project on this server. Traces stay queued.",
        )
    if status in (408, 429) or status >= 500:
        wait = f", Retry-After {retry_after}" if retry_after else ""
        return Delivery(
            "retry", status,
            f"Langfuse at {base} is unavailable (HTTP {status}{said}{wait}); traces stay queued and are retried later.",
        )
    if status == 404:
        return Delivery(
            "retry", status,
            f"Langfuse at {base} has no ingestion endpoint (HTTP 404); check CC_LANGFUSE_BASE_URL points at the "
            "Langfuse web UI address (e.g. http://localhost:3050). Traces stay queued.",
        )
    if 300 <= status < 400:
        return Delivery(
            "retry", status,
            f"Langfuse at {base} answered with a redirect (HTTP {status}); check CC_LANGFUSE_BASE_URL "
            "(scheme, host, port). Traces stay queued.",
        )
    return Delivery(
        "dead", status,
        f"Langfuse at {base} rejected the data for good (HTTP {status}{said}); "
        "the record goes to the dead letters (see `status`, retry with `drain --retry-dead`).",
    )


def _span_weight(span: ReadableSpan) -> int:
    size = 256
    for value in (span.attributes or {}).values():
        if isinstance(value, str):
            size += len(value)
        elif isinstance(value, (list, tuple)):
            size += sum(len(v) if isinstance(v, str) else 8 for v in value)
        else:
            size += 8
    return size


class _Target:
    """Where and how one Sender POSTs: URL, headers with its keys, its HTTP client."""

    def __init__(self, settings: SendSettings, http: httpx.Client) -> None:
        self.http = http
        self.base = display_url(settings.base_url)
        self.url = settings.base_url.rstrip("/") + TRACES_PATH
        self.timeout = settings.timeout
        token = base64.b64encode(f"{settings.public_key}:{settings.secret_key}".encode()).decode()
        # What the SDK's own exporter sends; a custom span_exporter gets none of it.
        self.headers = {
            "Authorization": f"Basic {token}",
            "Content-Type": "application/x-protobuf",
            "Content-Encoding": "gzip",
            "x-langfuse-sdk-name": "python",
            "x-langfuse-sdk-version": LANGFUSE_SDK_VERSION,
            "x-langfuse-public-key": settings.public_key,
            "x-langfuse-ingestion-version": "4",
            "User-Agent": f"claude-code-langfuse (langfuse-python/{LANGFUSE_SDK_VERSION})",
        }


class _RecordExporterBase:
    """Sends the spans of the record being sent; keeps the HTTP outcome per span id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._target: Optional[_Target] = None
        self._times: Optional[dict[str, tuple[int, int, bool]]] = None
        self._accepted: dict[str, int] = {}
        self._failure: Optional[Delivery] = None

    # -- per record
    def begin(self, plan: _Plan, target: _Target) -> None:
        with self._lock:
            self._target = target
            self._times = plan.times
            self._accepted = {}
            self._failure = None

    def finish(self) -> tuple[dict[str, int], Optional[Delivery]]:
        with self._lock:
            result = (dict(self._accepted), self._failure)
            self._times = None
            self._target = None
            return result

    @property
    def failed(self) -> bool:
        return self._failure is not None

    # -- SpanExporter
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            times, failure, target = self._times, self._failure, self._target
        if times is None or target is None:
            send_log.error("dropped %d span(s) finished outside a send", len(spans))
            return SpanExportResult.FAILURE
        if failure is not None:
            # The record is already lost for this round; don't spend more requests on it.
            return SpanExportResult.FAILURE
        try:
            rebuilt = [self._rebuild(span, times) for span in spans]
            ok = True
            for group in self._groups(rebuilt):
                if not self._post(target, group):
                    ok = False
                    break
        except Exception as exc:  # never let the batch processor swallow our own bug silently
            send_log.exception("exporting spans failed")
            self._fail(Delivery("retry", None, f"could not encode or send spans: {exc!r}; traces stay queued"))
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        pass  # the Sender owns the HTTP client

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    # -- internals
    @staticmethod
    def _rebuild(span: ReadableSpan, times: dict[str, tuple[int, int, bool]]) -> ReadableSpan:
        span_id = otel_trace.format_span_id(span.context.span_id)
        planned = times.get(span_id)
        if planned is None:
            send_log.warning("span %s is not part of the record being sent; exported unchanged", span_id)
            return span
        start_ns, end_ns, has_parent = planned
        attributes = dict(span.attributes or {})
        if has_parent:
            # The processor marks spans whose parent it never saw as application roots;
            # a subagent's top span has its parent in another record, not a new root.
            attributes.pop(IS_APP_ROOT, None)
        return ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=attributes,
            events=span.events,
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=start_ns,
            end_time=end_ns,
            instrumentation_scope=span.instrumentation_scope,
        )

    @staticmethod
    def _groups(spans: list[ReadableSpan]) -> list[list[ReadableSpan]]:
        groups: list[list[ReadableSpan]] = []
        current: list[ReadableSpan] = []
        size = 0
        for span in spans:
            weight = _span_weight(span)
            if current and size + weight > MAX_POST_BYTES:
                groups.append(current)
                current, size = [], 0
            current.append(span)
            size += weight
        if current:
            groups.append(current)
        return groups

    def _post(self, target: _Target, spans: list[ReadableSpan]) -> bool:
        body = gzip.compress(encode_spans(spans).SerializeToString(), compresslevel=6, mtime=0)
        try:
            response = target.http.post(target.url, content=body, headers=target.headers)
        except httpx.TimeoutException:
            return self._fail(Delivery(
                "retry", None,
                f"no answer from Langfuse at {target.base} within {target.timeout:g} s; "
                "traces stay queued and are retried later.",
            ))
        except httpx.HTTPError as exc:
            return self._fail(Delivery(
                "retry", None,
                f"cannot reach Langfuse at {target.base} ({type(exc).__name__}: {exc}); is the server running? "
                "Traces stay queued and are retried later.",
            ))
        status = response.status_code
        if status == 413 and len(spans) > 1:
            # Over a proxy's or the server's body limit: halves may fit; one span that
            # does not is dead below.
            half = len(spans) // 2
            return self._post(target, spans[:half]) and self._post(target, spans[half:])
        delivery = classify(status, target.base, "" if status < 300 else _server_message(response),
                            response.headers.get("Retry-After", ""))
        if delivery.outcome != "accepted":
            return self._fail(delivery)
        with self._lock:
            for span in spans:
                self._accepted[otel_trace.format_span_id(span.context.span_id)] = status
        return True

    def _fail(self, delivery: Delivery) -> bool:
        with self._lock:
            if self._failure is None:
                self._failure = delivery
        send_log.debug("send failed: %s", delivery.detail)  # the sender loop logs the one line that matters
        return False


# --------------------------------------------------------------------------- sender


def _resource() -> Resource:
    # Resource.create adds a random service.instance.id per process; Langfuse keeps
    # resource attributes with the observation, so a resend would differ for no reason.
    created = Resource.create({"service.name": "claude-code"})
    stable = {k: v for k, v in created.attributes.items() if k != "service.instance.id"}
    return Resource(stable, created.schema_url)


class _Engine:
    """The SDK client and its OpenTelemetry pipeline for one public key, for the process's life."""

    def __init__(self, settings: SendSettings) -> None:
        self.lock = threading.Lock()  # one record at a time through the pipeline
        self.ids = _RecordIds()
        self.exporter = _RecordExporter()
        self.provider = TracerProvider(
            id_generator=self.ids,
            sampler=ALWAYS_ON,  # an OTEL_TRACES_SAMPLER from the environment must not drop turns
            resource=_resource(),
        )
        self.client = Langfuse(
            public_key=settings.public_key,
            secret_key=settings.secret_key,
            base_url=display_url(settings.base_url).rstrip("/"),
            timeout=max(1, math.ceil(settings.timeout)),
            tracer_provider=self.provider,
            span_exporter=self.exporter,
            flush_at=EXPORT_CHUNK,
            flush_interval=5.0,
            sample_rate=1.0,
            tracing_enabled=True,
        )


def _engine_for(settings: SendSettings) -> _Engine:
    with _ENGINES_LOCK:
        engine = _ENGINES.get(settings.public_key)
        if engine is None:
            engine = _ENGINES[settings.public_key] = _Engine(settings)
        return engine


class Sender:
    """Sends queue records through the Langfuse SDK; see the module docstring.

    Cheap to open again in the same process (e.g. every drain round): the SDK client
    for a public key is created once and reused; URL, keys and timeout come from each
    Sender's own settings, because our exporter does the HTTP itself.
    """

    def __init__(self, settings: SendSettings) -> None:
        if not settings.public_key or not settings.secret_key:
            raise ValueError("Langfuse public and secret keys are required")
        if not settings.base_url.startswith(("http://", "https://")):
            raise ValueError(f"Langfuse base URL must start with http:// or https://: {display_url(settings.base_url)!r}")
        self.settings = settings
        _import_sdk()
        # The SDK would swap base64 images in inputs for media references and upload
        # them on the side (to S3/MinIO); a failed upload loses the image while the
        # trace still counts as accepted. Keep them inline unless the user opted in.
        os.environ.setdefault("LANGFUSE_MEDIA_UPLOAD_ENABLED", "false")
        self._engine = _engine_for(settings)
        self._http = httpx.Client(timeout=httpx.Timeout(settings.timeout))
        self._target = _Target(settings, self._http)
        self._closed = False
        # Both switches turn the SDK (or OpenTelemetry) into a silent no-op.
        self._disabled_by = next(
            (f"{name}={os.environ[name]}" for name, off in
             (("LANGFUSE_TRACING_ENABLED", "false"), ("OTEL_SDK_DISABLED", "true"))
             if os.environ.get(name, "").strip().lower() == off),
            "",
        )

    # -- public
    def send(self, record: dict) -> Delivery:
        """Send every observation of one queue record; never raises."""
        try:
            plan = build_plan(record)
        except BadRecord as exc:
            return Delivery("dead", None, f"the queue record is malformed and can never be sent: {exc}")
        except Exception as exc:  # a bug here must not cost the record
            send_log.exception("reading a queue record failed")
            return Delivery("retry", None, f"internal error while reading the record ({exc!r}); it stays queued; see the log")
        if self._closed:
            return Delivery("retry", None, "the sender was closed before this record; it stays queued")
        if self._disabled_by:
            return Delivery(
                "retry", None,
                f"{self._disabled_by} is set in the sender's environment, so the Langfuse SDK sends "
                "nothing; unset it (turn tracing off with TRACE_TO_LANGFUSE=false instead). Traces stay queued.",
            )
        engine = self._engine
        with engine.lock:
            engine.exporter.begin(plan, self._target)
            error: Optional[BaseException] = None
            try:
                self._emit(plan)
            except Exception as exc:
                send_log.exception("building spans for trace %s failed", plan.trace_id)
                error = exc
            finally:
                accepted, failure = engine.exporter.finish()
        return self._judge(plan, accepted, failure, error)

    def close(self) -> None:
        """Release this Sender's connections. Every send already flushed its spans; the
        SDK client stays for the next Sender and is shut down by the SDK at exit."""
        if self._closed:
            return
        self._closed = True
        self._http.close()

    def __enter__(self) -> "Sender":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals
    def _emit(self, plan: _Plan) -> None:
        live: list[tuple[Any, _Obs]] = []
        wrappers: dict[str, Any] = {}
        pending = 0

        def ended_one() -> None:
            nonlocal pending
            pending += 1
            if pending >= EXPORT_CHUNK:
                self._engine.client.flush()
                pending = 0

        # A clean context: nothing ambient (e.g. an instrumented caller) may become a parent.
        token = otel_context.attach(otel_context.Context())
        try:
            with propagate_attributes(**plan.trace_attributes):
                try:
                    for obs in plan.order:
                        if self._engine.exporter.failed:
                            break
                        wrapper = self._start(plan, obs, wrappers.get(obs.parent_id or ""))
                        if wrapper.id != obs.id or wrapper.trace_id != plan.trace_id:
                            raise RuntimeError(
                                f"SDK gave span {wrapper.trace_id}/{wrapper.id}, expected {plan.trace_id}/{obs.id}"
                            )
                        wrappers[obs.id] = wrapper
                        if obs.type == "event":
                            ended_one()  # the SDK ends events when it creates them
                        else:
                            live.append((wrapper, obs))
                finally:
                    # Children before parents, as a live application would end them; spans
                    # of an already failed record are discarded by the exporter.
                    for wrapper, obs in reversed(live):
                        wrapper.end(end_time=obs.end_ns)
                        ended_one()
                    self._engine.client.flush()
        finally:
            otel_context.detach(token)

    def _start(self, plan: _Plan, obs: _Obs, parent: Any) -> Any:
        self._engine.ids.arm(plan.trace_id, obs.id)
        kwargs = dict(obs.kwargs)
        if obs.parent_id is None:
            return self._start_top(obs, kwargs)
        # SDK 5.0.4: an event started from its parent observation ignores that parent
        # (it takes the ambient context), so events always get their parent made current.
        if parent is not None and obs.type != "event":
            return parent.start_observation(name=obs.name, as_type=obs.type, **kwargs)
        # Parent made current by its ids: an event, or a parent in another record (subagent
        # → the turn's Agent tool observation). Not via trace_context=: that marks the span
        # as a trace root and Langfuse would take its input/output as the trace's.
        parent_context = otel_trace.SpanContext(
            trace_id=int(plan.trace_id, 16),
            span_id=int(obs.parent_id, 16),
            is_remote=False,
            trace_flags=otel_trace.TraceFlags(otel_trace.TraceFlags.SAMPLED),
        )
        with otel_trace.use_span(otel_trace.NonRecordingSpan(parent_context)):
            return self._start_top(obs, kwargs)

    def _start_top(self, obs: _Obs, kwargs: dict[str, Any]) -> Any:
        if obs.type == "event":
            return self._engine.client.create_event(name=obs.name, **kwargs)
        return self._engine.client.start_observation(name=obs.name, as_type=obs.type, **kwargs)

    def _judge(
        self,
        plan: _Plan,
        accepted: dict[str, int],
        failure: Optional[Delivery],
        error: Optional[BaseException],
    ) -> Delivery:
        total = len(plan.order)
        if failure is not None:
            return failure
        if error is not None:
            return Delivery(
                "retry", None,
                f"internal error while building spans ({type(error).__name__}: {error}); "
                "the record stays queued; see the log",
            )
        missing = [o.id for o in plan.order if o.id not in accepted]
        if missing:
            return Delivery(
                "retry", None,
                f"{len(missing)} of {total} spans never reached the exporter (first {missing[0]}); "
                "check LANGFUSE_TRACING_ENABLED / OTEL_SDK_DISABLED / OTEL_BSP_MAX_QUEUE_SIZE in the "
                "sender's environment. The record stays queued.",
            )
        status = max(accepted.values())
        return Delivery("accepted", status, f"{total} observations accepted by Langfuse at {display_url(self.settings.base_url)}")


def open_sender(settings: Settings):
    return Sender(SendSettings(public_key=settings.public_key, secret_key=settings.secret_key, base_url=display_url(settings.base_url), timeout=settings.timeout))


# ============================================================================ sender loop

AUTH_ADVICE = ("Langfuse rejected the keys: check CC_LANGFUSE_PUBLIC_KEY / CC_LANGFUSE_SECRET_KEY (config file {config}) "
               "match an API key of the project at {url}; the queue is kept and resumes by itself once they work")
RETRY_ADVICE = "Langfuse at {url} is not accepting traces right now ({detail}); the queue is kept and retried with backoff. Is the server up? `docker compose ps`"
DEAD_ADVICE = "{detail} Moved to {dead}; `drain --retry-dead` tries again"
NOKEYS_ADVICE = "no Langfuse keys configured: run scripts/install-hook.sh or set CC_LANGFUSE_PUBLIC_KEY / CC_LANGFUSE_SECRET_KEY; the queue is kept"
NOSDK_ADVICE = "the langfuse SDK is not importable by {python}: rerun scripts/install-hook.sh (it creates ~/.claude/langfuse/venv); the queue is kept"


class DrainSummary:
    def __init__(self) -> None:
        self.sent = self.dead = self.kept = self.corrupt = 0
        self.stopped_by = ""  # "", "auth", "retry", "nokeys", "nosdk"
        self.detail = ""


def reachable(base_url: str, timeout: float = 1.5) -> tuple[bool, str]:
    """A TCP connect to the server: cheap, and enough to skip a doomed SDK start."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    host = parts.hostname or "localhost"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as e:
        return False, f"cannot connect to {host}:{port}: {e.strerror or e}"


def update_sender_status(paths: Paths, **changes) -> dict:
    status = read_json_file(paths.sender_status, {})
    if not isinstance(status, dict):
        status = {}
    status.update(changes)
    try:
        write_atomic(paths.sender_status, json.dumps(status, ensure_ascii=False, indent=1).encode())
    except OSError:
        pass
    return status


def _record_failure(paths: Paths, settings: Settings, kind: str, http_status, detail: str, advice: str, log) -> None:
    status = read_json_file(paths.sender_status, {}) if os.path.exists(paths.sender_status) else {}
    failures = int((status or {}).get("consecutive_failures") or 0) + 1
    wait = 300.0 if kind == "auth" else min(300.0, 5.0 * 2 ** (failures - 1))
    if kind in ("nokeys", "nosdk"):
        wait = 0.0  # not the server's fault: the next run (perhaps another interpreter) may try at once
    update_sender_status(
        paths, last_attempt=now_iso(), consecutive_failures=failures, next_attempt_epoch=time.time() + wait,
        auth_failed_keys=key_fingerprint(settings) if kind == "auth" else None,
        last_error={"time": now_iso(), "kind": kind, "http_status": http_status, "detail": detail, "advice": advice},
    )
    log.error("%s", advice)


def drain_queue(settings: Settings, log, progress=None) -> DrainSummary:
    """Send the queue oldest first; a record leaves the queue only after the server accepted it."""
    paths = Paths(settings.state_dir)
    summary = DrainSummary()
    entries = queue_read(paths.queue)
    dead: list[dict] = []
    done: dict[str, str] = {}
    for e in entries:
        if e.record is None and e.error != "incomplete last line":
            dead.append({"dead_at": now_iso(), "reason": e.error, "raw": e.raw.decode("utf-8", "replace")})
            summary.corrupt += 1
    latest: dict[str, dict] = {}
    for e in entries:
        if e.record is not None:
            seen = latest.get(e.record["key"])
            if seen is None or (e.record.get("queued_at") or "") >= (seen.get("queued_at") or ""):
                latest[e.record["key"]] = e.record  # the newest version of a turn is the one Langfuse must end with
    order = sorted(latest.values(), key=lambda r: r.get("queued_at") or "")
    if summary.corrupt:
        log.error("moved %d corrupt queue line(s) to %s; the rest of the queue is unaffected", summary.corrupt, paths.dead)
    if not order:
        queue_remove(paths, done, dead)
        return summary
    if not settings.has_keys:
        summary.stopped_by, summary.kept = "nokeys", len(order)
        _record_failure(paths, settings, "nokeys", None, "no keys", NOKEYS_ADVICE, log)
        queue_remove(paths, done, dead)
        return summary
    ok, why = reachable(settings.base_url)
    if not ok:
        summary.stopped_by, summary.kept, summary.detail = "retry", len(order), why
        _record_failure(paths, settings, "retry", None, why, RETRY_ADVICE.format(url=display_url(settings.base_url), detail=why), log)
        queue_remove(paths, done, dead)
        return summary
    try:
        sender = open_sender(settings)
    except ImportError as e:
        summary.stopped_by, summary.kept, summary.detail = "nosdk", len(order), str(e)
        _record_failure(paths, settings, "nosdk", None, str(e), NOSDK_ADVICE.format(python=sys.executable), log)
        queue_remove(paths, done, dead)
        return summary
    last_commit, commit_cost = time.monotonic(), 0.0
    try:
        for i, record in enumerate(order):
            delivery = sender.send(record)
            if delivery.outcome == "accepted":
                done[record["key"]] = record.get("rev", "")
                summary.sent += 1
            elif delivery.outcome == "dead":
                done[record["key"]] = record.get("rev", "")
                dead.append({"dead_at": now_iso(), "reason": delivery.detail, "http_status": delivery.http_status, "record": record})
                summary.dead += 1
                log.error("%s", DEAD_ADVICE.format(detail=delivery.detail, dead=paths.dead))
            else:
                summary.stopped_by, summary.detail = delivery.outcome, delivery.detail
                summary.kept = len(order) - i
                if delivery.outcome == "auth":
                    advice = AUTH_ADVICE.format(config=settings.config_path, url=display_url(settings.base_url))
                else:
                    advice = RETRY_ADVICE.format(url=display_url(settings.base_url), detail=delivery.detail)
                _record_failure(paths, settings, delivery.outcome, delivery.http_status, delivery.detail, advice, log)
                break
            if progress:
                progress(i + 1, len(order), summary)
            # Rewriting the queue holds the lock hooks append under: with a big backlog, commit
            # rarely enough that hooks wait at most ~5 % of the time (a crash only means resends).
            if time.monotonic() - last_commit > max(1.0, 20 * commit_cost):
                t0 = time.monotonic()
                queue_remove(paths, done, dead)
                commit_cost = time.monotonic() - t0
                done, dead = {}, []
                last_commit = time.monotonic()
    finally:
        try:
            sender.close()
        except Exception as e:  # closing must not lose the bookkeeping below
            log.warning("closing the Langfuse client failed: %s", e)
        queue_remove(paths, done, dead)
    if summary.sent or summary.dead:
        changes: dict = {"last_attempt": now_iso()}
        if summary.sent:
            changes.update(last_success=now_iso(), sent_total=int((read_json_file(paths.sender_status, {}) or {}).get("sent_total") or 0) + summary.sent)
        if not summary.stopped_by:
            changes.update(consecutive_failures=0, next_attempt_epoch=0, auth_failed_keys=None, last_error=None)
        update_sender_status(paths, **changes)
    return summary


def sender_main(settings: Settings) -> int:
    """The detached sender: one at a time; drains until the queue is empty or the server says stop."""
    os.umask(0o077)
    log = get_logger(settings)
    paths = Paths(settings.state_dir)
    ensure_state_dir(paths.dir)
    for _round in range(20):
        # a `status` or a hook probes this lock for a moment; a real sender holds it for long
        lock = FileLock(paths.sender_lock, timeout=1.0)
        if not lock.acquire():
            return 0
        try:
            update_sender_status(paths, pid=os.getpid(), running_since=now_iso())
            summary = drain_queue(settings, log)
            log.info("sender: %d sent, %d dead-lettered, %d kept%s", summary.sent, summary.dead, summary.kept,
                     f" ({summary.stopped_by}, see the error above)" if summary.stopped_by else "")
            update_sender_status(paths, pid=None)
        finally:
            lock.release()
        # A hook that appended while we held the lock did not start a sender: look again.
        if summary.stopped_by or not any(e.record is not None for e in queue_read(paths.queue)):
            return 0
    return 0


# ============================================================================ status, drain, doctor


def _age(epoch_or_iso: Any) -> str:
    if not epoch_or_iso:
        return "never"
    t = parse_ts(epoch_or_iso) if isinstance(epoch_or_iso, str) else _dt.datetime.fromtimestamp(float(epoch_or_iso), _dt.timezone.utc)
    if t is None:
        return str(epoch_or_iso)
    secs = max(0, int((_dt.datetime.now(_dt.timezone.utc) - t).total_seconds()))
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


def collect_status(settings: Settings) -> dict:
    paths = Paths(settings.state_dir)
    entries = queue_read(paths.queue)
    records = [e.record for e in entries if e.record is not None]
    keys = {r["key"] for r in records}
    oldest = min((r.get("queued_at") or "" for r in records), default="")
    dead_count = 0
    try:
        with open(paths.dead, "rb") as f:
            dead_count = sum(1 for line in f if line.strip())
    except OSError:
        pass
    queue_bytes = os.path.getsize(paths.queue) if os.path.exists(paths.queue) else 0
    sender = read_json_file(paths.sender_status, {}) or {}
    lock = FileLock(paths.sender_lock, timeout=0)
    running = False
    if os.path.isdir(paths.locks):
        running = not lock.acquire(blocking=False)
        if not running:
            lock.release()
    state = load_state(paths)
    sessions = {v.get("session_id") for v in state["transcripts"].values()}
    warnings = []
    if queue_bytes > settings.queue_warn_bytes:
        warnings.append(f"the queue is {queue_bytes / 1048576:.2f} MB (over {settings.queue_warn_bytes / 1048576:g} MB): "
                        "Langfuse has not taken traces for a while; nothing is dropped, but check the last error")
    if dead_count:
        warnings.append(f"{dead_count} dead letter(s) in {paths.dead}: `drain --retry-dead` sends them again")
    if settings.config_error:
        warnings.append(settings.config_error)
    if not settings.has_keys:
        warnings.append(NOKEYS_ADVICE)
    return {
        "enabled": settings.enabled, "base_url": display_url(settings.base_url), "public_key": _mask_key(settings.public_key),
        "secret_key_set": bool(settings.secret_key), "config_path": settings.config_path, "state_dir": settings.state_dir,
        "queue_records": len(records), "queue_turns": len(keys), "queue_bytes": queue_bytes, "queue_oldest": oldest or None,
        "queue_corrupt_lines": sum(1 for e in entries if e.record is None and e.error != "incomplete last line"),
        "dead_letters": dead_count, "last_success": sender.get("last_success"), "last_error": sender.get("last_error"),
        "next_attempt_epoch": sender.get("next_attempt_epoch") or 0, "sent_total": sender.get("sent_total") or 0,
        "sender_running": running, "sessions_tracked": len(sessions), "last_log_problem": _last_log_problem(paths.log),
        "log": paths.log, "warnings": warnings,
    }


def format_status(st: dict) -> str:
    err = st["last_error"]
    rows = [
        ("Langfuse", f"{st['base_url']}  (public key {st['public_key']}, secret {'set' if st['secret_key_set'] else 'NOT SET'})"),
        ("Tracing", "on" if st["enabled"] else "off (TRACE_TO_LANGFUSE=false)"),
        ("Queue", f"{st['queue_turns']} trace(s) waiting, {st['queue_bytes'] / 1024:.1f} KB" + (f", oldest queued {_age(st['queue_oldest'])}" if st["queue_oldest"] else "")),
        ("Dead letters", str(st["dead_letters"])),
        ("Last success", _age(st["last_success"])),
        ("Last error", "none" if not err else f"{_age(err.get('time'))}: {err.get('advice') or err.get('detail')}"),
        ("Sessions", f"{st['sessions_tracked']} tracked"),
        ("Sender", "running" if st["sender_running"] else ("waiting (backoff) until " + _age(st["next_attempt_epoch"]).split(" (")[0] if st["next_attempt_epoch"] and st["next_attempt_epoch"] > time.time() else "idle")),
        ("Log", st["log"] + (f"\n{'':16}last problem: {st['last_log_problem']}" if st["last_log_problem"] else "")),
    ]
    out = ["claude-code-langfuse status"] + [f"  {k:<14}{v}" for k, v in rows]
    out += [f"  WARNING: {w}" for w in st["warnings"]]
    return "\n".join(out)


def cmd_status(settings: Settings, as_json: bool) -> int:
    st = collect_status(settings)
    print(json.dumps(st, indent=1) if as_json else format_status(st))
    return 0


def retry_dead_letters(paths: Paths) -> int:
    """Move dead letters that still hold a record back into the queue.

    A dead record whose turn has a newer version waiting in the queue is dropped instead: the
    newer version holds everything it had, and must not be shadowed by the old one."""
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
                if d["record"].get("key") in queued:
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
    os.umask(0o077)
    log = get_logger(settings)
    paths = Paths(settings.state_dir)
    ensure_state_dir(paths.dir)
    lock = FileLock(paths.sender_lock, timeout=60)
    if not lock.acquire():
        print("a background sender is busy for over 60 s; try again, or see `status`", file=sys.stderr)
        return 1
    try:
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
    print(f"drain: {summary.sent} sent, {summary.dead} moved to dead letters, {summary.corrupt} corrupt line(s) set aside, {left} left in the queue")
    if summary.stopped_by:
        err = (read_json_file(paths.sender_status, {}) or {}).get("last_error") or {}
        print(f"stopped: {err.get('advice') or summary.detail}")
        return 1
    return 0


# ============================================================================ backfill

SINCE_RE = re.compile(r"^\s*(\d+)\s*([hdw])\s*$")


def parse_since(text: str | None) -> float | None:
    """'30d', '12h', '2w' or an ISO date -> epoch seconds; None for no limit."""
    if not text:
        return None
    m = SINCE_RE.match(text)
    if m:
        return time.time() - int(m.group(1)) * {"h": 3600, "d": 86400, "w": 7 * 86400}[m.group(2)]
    t = parse_ts(text if "T" in text else text + "T00:00:00+00:00")
    if t is None:
        raise ValueError(f"--since {text!r}: use a duration like 30d, 12h, 2w or a date like 2026-10-01")
    return t.timestamp()


def projects_roots() -> list[str]:
    roots = []
    for base in (os.environ.get("CLAUDE_CONFIG_DIR") or "").split(","):
        if base.strip():
            roots.append(os.path.join(os.path.expanduser(base.strip()), "projects"))
    roots.append(os.path.join(_home(), ".claude", "projects"))
    roots.append(os.path.join(_home(), ".config", "claude", "projects"))
    out = []
    for r in roots:
        if os.path.isdir(r) and os.path.realpath(r) not in {os.path.realpath(o) for o in out}:
            out.append(r)
    return out


def session_files(roots: list[str]) -> Iterator[str]:
    """Main session transcripts: <root>/<slug>/<session>.jsonl (agent files are reached through their parents)."""
    for root in roots:
        for slug in sorted(os.listdir(root)):
            d = os.path.join(root, slug)
            if not os.path.isdir(d):
                continue
            for name in sorted(os.listdir(d)):
                if name.endswith(".jsonl") and not name.startswith("agent-"):
                    yield os.path.join(d, name)


def transcript_cwd(path: str) -> str:
    try:
        with open(path, "rb") as f:
            for i, row in enumerate(iter_rows(f, 0)):
                if row.data.get("cwd"):
                    return str(row.data["cwd"])
                if i > 200:
                    break
    except OSError:
        pass
    return ""


def project_opted_out(cwd: str) -> bool:
    """TRACE_TO_LANGFUSE=false in the project's .claude/settings(.local).json env block."""
    if not cwd:
        return False
    value = None
    for name in ("settings.json", "settings.local.json"):  # local wins
        data = read_json_file(os.path.join(cwd, ".claude", name), {})
        env = data.get("env") if isinstance(data, dict) else None
        if isinstance(env, dict) and "TRACE_TO_LANGFUSE" in env:
            value = str(env["TRACE_TO_LANGFUSE"])
    return value is not None and value.strip().lower() in FALSE_WORDS


class Progress:
    """A one-line progress bar on stderr (files, turns, rate, ETA), only on a terminal."""

    def __init__(self, total_bytes: int, total_files: int, enabled: bool):
        self.total_bytes, self.total_files, self.enabled = max(1, total_bytes), total_files, enabled
        self.bytes = self.files = self.turns = 0
        self.t0 = time.monotonic()
        self.last = 0.0

    def update(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < 0.2):
            return
        self.last = now
        elapsed = max(1e-6, now - self.t0)
        frac = min(1.0, self.bytes / self.total_bytes)
        eta = (elapsed / frac - elapsed) if frac > 0 else 0
        bar = "#" * int(frac * 24)
        sys.stderr.write(f"\r[{bar:<24}] {frac * 100:5.1f}%  files {self.files}/{self.total_files}  turns {self.turns}"
                         f"  {self.turns / elapsed:6.1f} turns/s  ETA {eta:5.0f}s ")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            self.update(force=True)
            sys.stderr.write("\n")


def cmd_backfill(settings: Settings, since: str | None, project: str | None, dry_run: bool, roots: list[str] | None = None) -> int:
    os.umask(0o077)
    try:
        since_epoch = parse_since(since)
    except ValueError as e:
        print(f"backfill: {e}", file=sys.stderr)
        return 2
    roots = roots or projects_roots()
    if not roots:
        print("backfill: no Claude Code projects folder found (~/.claude/projects, CLAUDE_CONFIG_DIR)", file=sys.stderr)
        return 1
    try:
        redactor = Redactor(settings.redact, settings.redact_patterns)
    except ValueError as e:
        print(f"backfill: {e}", file=sys.stderr)
        return 2
    candidates, skipped_opt_out, skipped_project = [], 0, 0
    for path in session_files(roots):
        try:
            st = os.stat(path)
        except OSError:
            continue
        if since_epoch and st.st_mtime < since_epoch:
            continue
        cwd = transcript_cwd(path)
        if project and project_name(cwd) != project:
            skipped_project += 1
            continue
        if project_opted_out(cwd):
            skipped_opt_out += 1
            continue
        candidates.append((path, st.st_size, cwd))
    log = None if dry_run else LazyLog(settings)  # a dry run leaves no trace on disk, not even a log
    paths = Paths(settings.state_dir)
    if not dry_run:
        ensure_state_dir(paths.dir)
    progress = Progress(sum(c[1] for c in candidates), len(candidates), sys.stderr.isatty())
    totals = {"sessions": 0, "turns": 0, "records": 0, "bytes": 0, "first": "", "last": ""}
    batch: list[dict] = []

    def flush_batch() -> None:
        if batch and not dry_run:
            queue_append(paths, batch, lock_timeout=120)
        batch.clear()

    for path, size, cwd in candidates:
        session_id = os.path.basename(path)[: -len(".jsonl")]
        event = HookEvent(name="Backfill", session_id=session_id, transcript_path=path, cwd=cwd)
        key = state_key(session_id, path)
        lock = FileLock(paths.session_lock(session_id), timeout=30) if not dry_run else None
        if lock and not lock.acquire():
            print(f"backfill: {path} is busy (a hook is processing it); skipped, run backfill again later", file=sys.stderr)
            continue
        try:
            entry = load_state(paths)["transcripts"].get(key, {}) if not dry_run or os.path.exists(paths.state) else {}

            def sink(rec: dict) -> None:
                totals["records"] += 1
                totals["bytes"] += len(json.dumps(rec, ensure_ascii=False))
                root = rec["observations"][0]
                totals["first"] = min(totals["first"] or root["start"], root["start"])
                totals["last"] = max(totals["last"], root["end"] or "")
                batch.append(rec)
                if len(batch) >= 50:
                    flush_batch()

            result = collect_records(event, entry, settings, redactor, log, sink=sink)
            flush_batch()  # records durable before the cursor moves
            if not dry_run:
                update_state_entry(paths, key, result.entry)
        finally:
            if lock:
                lock.release()
        totals["sessions"] += 1
        totals["turns"] += result.turns_seen
        progress.files += 1
        progress.turns += result.turns_seen
        progress.bytes += size
        progress.update()
    progress.done()
    what = "would queue" if dry_run else "queued"
    print(f"backfill: {totals['sessions']} session(s), {totals['turns']} turn(s) read, {totals['records']} trace record(s) {what} "
          f"({totals['bytes'] / 1048576:.1f} MB)" + (f", {totals['first'][:10]} .. {totals['last'][:10]}" if totals["first"] else ""))
    if skipped_opt_out:
        print(f"backfill: {skipped_opt_out} session(s) skipped: their project sets TRACE_TO_LANGFUSE=false")
    if skipped_project:
        print(f"backfill: {skipped_project} session(s) of other projects skipped")
    if not dry_run and totals["records"]:
        if settings.enabled:
            start_sender(paths, settings, log)
        print(f"backfill: the sender delivers them in the background; `{self_command()} status` shows progress")
    return 0


MIN_SERVER_VERSION = (4, 59, 0)


def _http_get(url: str, timeout: float, auth: tuple[str, str] | None = None) -> tuple[int | None, str]:
    import base64
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers={"User-Agent": f"claude-code-langfuse/{HOOK_VERSION}"})
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(65536).decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read(65536).decode("utf-8", "replace") if e.fp else ""
    except (OSError, ValueError) as e:
        return None, str(getattr(e, "reason", e))


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def hook_registrations(settings_path: str) -> dict[str, bool]:
    found = {"Stop": False, "SubagentStop": False, "SessionEnd": False}
    data = read_json_file(settings_path, {})
    hooks = data.get("hooks") if isinstance(data, dict) else None
    if not isinstance(hooks, dict):
        return found
    for event in found:
        for group in hooks.get(event) or []:
            for handler in (group or {}).get("hooks") or [] if isinstance(group, dict) else []:
                if isinstance(handler, dict) and "langfuse_hook" in str(handler.get("command", "")) + " ".join(map(str, handler.get("args") or [])):
                    found[event] = True
    return found


def run_doctor(settings: Settings) -> list[tuple[str, bool, str]]:
    """(check, ok, detail or how to fix) for every part a trace passes through."""
    checks: list[tuple[str, bool, str]] = []
    settings_path = os.path.join(claude_dir(), "settings.json")
    regs = hook_registrations(settings_path)
    missing = [k for k, v in regs.items() if not v]
    as_plugin = bool(os.environ.get("CLAUDE_PLUGIN_ROOT")) or os.sep + os.path.join("plugins", "") in os.path.abspath(__file__)
    if as_plugin:
        checks.append(("hook registered in Claude Code", True, "plugin install: hooks/hooks.json registers it (`claude plugin list`)"))
    else:
        checks.append(("hook registered in Claude Code", not missing,
                       f"{settings_path}: Stop, SubagentStop, SessionEnd" if not missing else
                       f"{settings_path} lacks the hook for {', '.join(missing)}: run scripts/install-hook.sh"))
    checks.append(("tracing enabled", settings.enabled, "on" if settings.enabled else "TRACE_TO_LANGFUSE is false in this environment"))
    if as_plugin and not settings.has_keys:
        checks.append(("config", not settings.config_error, settings.config_error or
                       "plugin install: Claude Code passes the keys to the hook (CLAUDE_PLUGIN_OPTION_*); to check them "
                       "here, set CC_LANGFUSE_PUBLIC_KEY / CC_LANGFUSE_SECRET_KEY / CC_LANGFUSE_BASE_URL in this shell"))
    else:
        source = "the environment" if (os.environ.get("CC_LANGFUSE_PUBLIC_KEY") or os.environ.get("LANGFUSE_PUBLIC_KEY")) else settings.config_path
        checks.append(("config", not settings.config_error and settings.has_keys,
                       settings.config_error or (f"keys from {source}" if settings.has_keys else NOKEYS_ADVICE)))
    try:
        Redactor(settings.redact, settings.redact_patterns)
        checks.append(("redaction", True, "on" + (f", {len(settings.redact_patterns)} pattern(s) of yours" if settings.redact_patterns else "")
                       if settings.redact else "OFF (CC_LANGFUSE_REDACT=false): secrets in transcripts are sent as they are"))
    except ValueError as e:
        checks.append(("redaction", False, f"{e}; only the built-in rules apply until it is fixed"))
    try:
        import importlib.metadata as md

        version = md.version("langfuse")
        ok = version.split(".")[0] == "5"
        checks.append(("langfuse SDK", ok, f"langfuse {version} in {sys.executable}" if ok else
                       f"langfuse {version} in {sys.executable}, but 5.x is required: rerun scripts/install-hook.sh"))
    except Exception:
        checks.append(("langfuse SDK", False, NOSDK_ADVICE.format(python=sys.executable)))
    code, body = _http_get(settings.base_url + "/api/public/health", timeout=5)
    server_ok = code == 200
    version_text = ""
    if server_ok:
        try:
            version_text = str(json.loads(body).get("version") or "")
        except ValueError:
            version_text = ""
    if code is None:
        checks.append(("server reachable", False, f"{display_url(settings.base_url)}: {body}. Start it: `docker compose up -d` in the repository, or fix CC_LANGFUSE_BASE_URL"))
    elif not server_ok:
        checks.append(("server reachable", False, f"{display_url(settings.base_url)}/api/public/health answered {code}: the server is starting or unhealthy; `docker compose ps` and `docker compose logs langfuse-web`"))
    else:
        new_enough = _version_tuple(version_text) >= MIN_SERVER_VERSION if version_text else False
        checks.append(("server reachable", True, f"{display_url(settings.base_url)} (Langfuse {version_text or 'unknown version'})"))
        checks.append(("server version >= 4.59", new_enough, f"Langfuse {version_text}" if new_enough else
                       f"Langfuse {version_text or '(version not reported)'} is too old for SDK 5: upgrade the server images to >= 4.59 (docker-compose.yml)"))
    if server_ok and settings.has_keys:
        code, body = _http_get(settings.base_url + "/api/public/projects", timeout=5, auth=(settings.public_key, settings.secret_key))
        checks.append(("keys accepted", code == 200, "the project accepts the keys" if code == 200 else
                       (AUTH_ADVICE.format(config=settings.config_path, url=display_url(settings.base_url)) if code in (401, 403) else f"/api/public/projects answered {code}: {body[:200]}")))
    st = collect_status(settings)
    queue_ok = not st["queue_corrupt_lines"] and st["queue_bytes"] <= settings.queue_warn_bytes and not (st["last_error"] and st["queue_turns"])
    detail = f"{st['queue_turns']} waiting, {st['dead_letters']} dead letter(s)"
    if st["last_error"] and st["queue_turns"]:
        detail += "; last error: " + (st["last_error"].get("advice") or "")
    if st["queue_turns"] and not st["sender_running"]:
        detail += f"; send now with `{self_command()} drain`"
    checks.append(("queue healthy", queue_ok, detail))
    try:
        mode = os.stat(settings.state_dir).st_mode & 0o777
        checks.append(("private state folder", not mode & 0o077, f"{settings.state_dir} is {mode:o}" if not mode & 0o077
                       else f"{settings.state_dir} is {mode:o}, readable by others: chmod 700 {settings.state_dir}"))
    except OSError:
        checks.append(("private state folder", True, f"{settings.state_dir} does not exist yet; the first hook run creates it (0700)"))
    return checks


def cmd_doctor(settings: Settings) -> int:
    checks = run_doctor(settings)
    for name, ok, detail in checks:
        print(f"  {'ok  ' if ok else 'FAIL'}  {name:<32} {detail}")
    failed = [c for c in checks if not c[1]]
    print(f"{len(checks) - len(failed)} of {len(checks)} checks passed" + ("" if not failed else "; fix the FAIL lines above"))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        hook_main()
        return 0
    return cli_main(argv)


def cli_main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="langfuse_hook.py", description="claude-code-langfuse: Claude Code turns as Langfuse traces. "
                                     "Without a command it runs as the Claude Code hook (event JSON on stdin).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{status,drain,doctor,backfill}")
    p = sub.add_parser("status", help="queue, dead letters, last success and error, sender")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("drain", help="send the queue now, in the foreground")
    p.add_argument("--retry-dead", action="store_true", help="first move dead letters back into the queue")
    sub.add_parser("doctor", help="check settings, SDK, server, keys and queue; say how to fix what fails")
    p = sub.add_parser("backfill", help="queue sessions from before the hook was installed (same ids as the live hook)")
    p.add_argument("--since", default="30d", help="only sessions changed within this window: 30d, 12h, 2w or a date (default 30d)")
    p.add_argument("--project", help="only this project (folder name of the git top level / cwd)")
    p.add_argument("--dry-run", action="store_true", help="print what would be sent; queue and send nothing")
    sub.add_parser("send")  # internal: the detached sender (not listed in --help)
    sub.add_parser("bootstrap")  # internal: builds the plugin's venv, then sends
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.command == "status":
        return cmd_status(settings, args.json)
    if args.command == "drain":
        return cmd_drain(settings, args.retry_dead)
    if args.command == "doctor":
        return cmd_doctor(settings)
    if args.command == "backfill":
        return cmd_backfill(settings, args.since, args.project, args.dry_run)
    if args.command == "send":
        return sender_main(settings)
    if args.command == "bootstrap":
        return bootstrap_main(settings)
    return 2


if __name__ == "__main__":
    try:
        code = main()
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
