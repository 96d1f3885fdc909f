"""Facts from hook events the transcript lacks or gives late, filed per session by the worker.

PermissionRequest (when Claude asked), PostToolUse / PostToolUseFailure (the tool's own
`duration_ms`), SubagentStart (an agent's real start), SessionStart (`source`) and StopFailure (the
API error type of a failed turn) are recorded here without reading the transcript; the worker
merges them into the turns it builds from the transcript (`apply`). Each fact keeps the time the
hook saw it (`fact_at`) and is recorded once, so reading the transcript again changes nothing.
Nothing depends on them: without these events (an older Claude Code, hooks not registered) the
transcript alone makes the same traces, minus these details.

One file per session: `<state>/facts/<sha256(session)[:16]>.json`, bounded (the newest
MAX_TOOLS tool facts, MAX_LIST of each list).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os

from .files import FileLock, Paths, read_json_file, write_atomic
from .inbox import input_digest
from .records import ended_on_api_error
from .turns import AGENT_TOOL_NAMES, ToolCall, Turn, iso_ms, parse_ts

FACT_EVENTS = ("PermissionRequest", "PostToolUse", "PostToolUseFailure", "SubagentStart", "SessionStart")
MAX_TOOLS = 2000
MAX_LIST = 500
PERMISSION_MATCH_S = 5.0  # a PermissionRequest this far outside its call's timestamps is not that call's
STOP_FAILURE_MATCH_S = 120.0


def facts_path(paths: Paths, session_id: str) -> str:
    name = hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return os.path.join(paths.dir, "facts", name + ".json")


def load(paths: Paths, session_id: str) -> dict:
    data = read_json_file(facts_path(paths, session_id), {})
    return data if isinstance(data, dict) and data.get("session_id") in (None, session_id) else {}


def _iso(epoch) -> str:
    try:
        return iso_ms(_dt.datetime.fromtimestamp(float(epoch), _dt.UTC))
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def record(paths: Paths, event: dict, lock_timeout: float = 10.0) -> bool:
    """File one fact event (already trimmed by the hook). False: nothing usable in it."""
    session = event.get("session_id")
    name = event.get("hook_event_name")
    at = _iso(event.get("fact_at"))
    if not isinstance(session, str) or not session or not at:
        return False
    path = facts_path(paths, session)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with FileLock(paths.session_lock(session) + ".facts", timeout=lock_timeout):
        data = load(paths, session)
        data["session_id"] = session
        changed = _merge(data, name, event, at)
        if changed:
            _bound(data)
            write_atomic(path, json.dumps(data, ensure_ascii=True, sort_keys=True).encode("ascii"))
    return True


def _merge(data: dict, name, event: dict, at: str) -> bool:
    def add(list_name: str, item: dict) -> bool:
        items = data.setdefault(list_name, [])
        if item in items:  # the same event twice: recorded once
            return False
        items.append(item)
        return True

    if name in ("PostToolUse", "PostToolUseFailure"):
        tools = data.setdefault("tools", {})
        tid = event.get("tool_use_id")
        if not isinstance(tid, str) or tid in tools:
            return False  # the first report of a call stands
        fact = {"at": at, "failed": name == "PostToolUseFailure"}
        for k in ("duration_ms", "is_interrupt", "error", "agent_id"):
            if event.get(k) is not None:
                fact[k] = event[k]
        tools[tid] = fact
        return True
    if name == "PermissionRequest":
        item = {"at": at, "tool_name": event.get("tool_name") or "", "input_digest": event.get("input_digest") or ""}
        if event.get("agent_id"):
            item["agent_id"] = event["agent_id"]
        return add("permission_requests", item)
    if name == "SubagentStart":
        agents = data.setdefault("agents", {})
        aid = event.get("agent_id")
        if not isinstance(aid, str) or aid in agents:
            return False
        agents[aid] = {"start": at, "agent_type": event.get("agent_type") or ""}
        return True
    if name == "SessionStart":
        item = {"at": at, "source": event.get("source") or ""}
        if event.get("model"):
            item["model"] = event["model"]
        return add("session_starts", item)
    if name == "StopFailure":  # also read as a transcript event (collect.process_event)
        item = {"at": at, "error": event.get("error") or "unknown"}
        for k in ("error_details", "last_assistant_message", "prompt_id"):
            if event.get(k):
                item[k] = event[k]
        return add("stop_failures", item)
    return False


def _bound(data: dict) -> None:
    tools = data.get("tools") or {}
    if len(tools) > MAX_TOOLS:
        data["tools"] = dict(list(tools.items())[-MAX_TOOLS:])
    agents = data.get("agents") or {}
    if len(agents) > MAX_LIST:
        data["agents"] = dict(list(agents.items())[-MAX_LIST:])
    for k in ("permission_requests", "session_starts", "stop_failures"):
        if len(data.get(k) or []) > MAX_LIST:
            data[k] = data[k][-MAX_LIST:]


# ============================================================================ merge into turns


def _seconds(a: str, b: str) -> float | None:
    ta, tb = parse_ts(a), parse_ts(b)
    return (tb - ta).total_seconds() if ta and tb else None


def apply(turn: Turn, data: dict) -> None:
    """Put the session's facts on a turn built from the transcript (and on its subagent runs)."""
    if not data:
        return
    starts = [s for s in data.get("session_starts") or [] if isinstance(s, dict) and s.get("at", "") <= (turn.start or "")]
    if starts:
        turn.session_start = max(starts, key=lambda s: s["at"])
    failure = _stop_failure(turn, data.get("stop_failures") or [])
    if failure:
        turn.stop_failure = failure
    _apply_tools(turn, data)


def _apply_tools(turn: Turn, data: dict) -> None:
    tools = data.get("tools") or {}
    requests = [r for r in data.get("permission_requests") or [] if isinstance(r, dict)]
    agents = data.get("agents") or {}
    for call in turn.tools.values():
        fact = tools.get(call.id)
        if isinstance(fact, dict):
            call.hook_facts = fact
        request = _permission_request(call, requests)
        if request:
            call.permission_request_at = request["at"]
        if call.name in AGENT_TOOL_NAMES and call.agent_id and isinstance(agents.get(call.agent_id), dict):
            call.agent_started = agents[call.agent_id].get("start") or ""
        if call.agent is not None:
            _apply_tools(call.agent, data)


def _permission_request(call: ToolCall, requests: list) -> dict | None:
    """The PermissionRequest of this call: same tool, same input, seen between the tool_use line and
    its result (a little slack for clocks); the closest to the tool_use line wins."""
    if not requests:
        return None
    digest = input_digest(call.input)
    end = call.end or call.start
    best, best_gap = None, None
    for r in requests:
        if r.get("tool_name") != call.name or r.get("input_digest") != digest:
            continue
        after_start, before_end = _seconds(call.start, r.get("at", "")), _seconds(r.get("at", ""), end)
        if after_start is None or before_end is None or after_start < -PERMISSION_MATCH_S or before_end < -PERMISSION_MATCH_S:
            continue
        gap = abs(after_start)
        if best_gap is None or gap < best_gap:
            best, best_gap = r, gap
    return best


def _stop_failure(turn: Turn, failures: list) -> dict | None:
    """The StopFailure of a turn that ended on an API error (the transcript's synthetic error message)."""
    error_gen = ended_on_api_error(turn)
    if error_gen is None or not failures:
        return None
    best, best_gap = None, None
    for f in failures:
        if not isinstance(f, dict) or f.get("at", "") < (turn.start or ""):
            continue
        if f.get("prompt_id") and turn.prompt_row.get("promptId") and f["prompt_id"] != turn.prompt_row["promptId"]:
            continue
        gap = _seconds(error_gen.first_ts or error_gen.end, f.get("at", ""))
        if gap is None or abs(gap) > STOP_FAILURE_MATCH_S:
            continue
        if best_gap is None or abs(gap) < best_gap:
            best, best_gap = f, abs(gap)
    return best
