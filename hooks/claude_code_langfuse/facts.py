"""Facts from hook events the transcript lacks or gives late, filed per session by the worker.

PermissionRequest (when Claude asked), PostToolUse / PostToolUseFailure (the tool's own
`duration_ms`), SubagentStart (an agent's real start), SessionStart (`source`) and StopFailure (the
API error type of a failed turn) are recorded here without reading the transcript; the worker
merges them into the turns it builds from the transcript (`apply`). Each fact keeps the time the
hook saw it (`fact_at`) and is recorded once, so reading the transcript again changes nothing.
Nothing depends on them: without these events (an older Claude Code, hooks not registered) the
transcript alone makes the same traces, minus these details.

The fact hooks run `async`, so a fact can reach the worker after its turn was queued, even after
the cursor moved past it: `late_turns` finds, cheaply and without reading the transcript, which of
the session's already-queued turns it may change (by tool observation id, agent id or time), and
the worker re-reads just those turns' bytes (collect.py).

One file per session: `<state>/facts/<sha256(session)[:16]>.json`, bounded (the newest
MAX_TOOLS tool facts, MAX_LIST of each list), removed a month after it was last written (`prune`,
run by the worker) and by `purge --session`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from typing import NamedTuple

from .files import FileLock, Paths, read_json_file, write_atomic
from .inbox import input_digest
from .records import ended_on_api_error, observation_id, trace_id_for
from .turns import AGENT_TOOL_NAMES, ToolCall, Turn, iso_ms, parse_ts

FACT_EVENTS = ("PermissionRequest", "PostToolUse", "PostToolUseFailure", "SubagentStart", "SessionStart")
MAX_TOOLS = 2000
MAX_LIST = 500
PERMISSION_MATCH_S = 5.0  # a PermissionRequest this far outside its call's timestamps is not that call's
STOP_FAILURE_MATCH_S = 120.0


def facts_path(paths: Paths, session_id: str) -> str:
    name = hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return os.path.join(paths.dir, "facts", name + ".json")


FACTS_KEPT_S = 30 * 86400  # a session's facts are merged within seconds; a month later nothing reads them


def prune(paths: Paths, max_age_s: float = FACTS_KEPT_S, now: float | None = None) -> int:
    """Remove facts files (and queued indexes) not written for `max_age_s`: one per session would
    otherwise pile up for ever. Returns how many were removed."""
    folder = os.path.join(paths.dir, "facts")
    cutoff = (now if now is not None else _dt.datetime.now(_dt.UTC).timestamp()) - max_age_s
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        path = os.path.join(folder, name)
        try:
            if name.endswith(".json") and os.stat(path).st_mtime < cutoff:
                os.unlink(path)
                removed += 1
        except OSError:
            pass
    return removed


def load(paths: Paths, session_id: str) -> dict:
    data = read_json_file(facts_path(paths, session_id), {})
    return data if isinstance(data, dict) and data.get("session_id") in (None, session_id) else {}


def _iso(epoch) -> str:
    try:
        return iso_ms(_dt.datetime.fromtimestamp(float(epoch), _dt.UTC))
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


NEW, KNOWN = "new", "known"  # record(): filed now / the same fact was filed before ("" = nothing usable)


def record(paths: Paths, event: dict, lock_timeout: float = 10.0) -> str:
    """File one fact event (already trimmed by the hook): NEW, KNOWN (filed before: nothing
    changes) or "" (nothing usable in it)."""
    session = event.get("session_id")
    name = event.get("hook_event_name")
    at = _iso(event.get("fact_at"))
    if not isinstance(session, str) or not session or not at:
        return ""
    path = facts_path(paths, session)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with FileLock(paths.session_lock(session) + ".facts", timeout=lock_timeout):
        data = load(paths, session)
        data["session_id"] = session
        changed = _merge(data, name, event, at)
        if changed:
            _bound(data)
            write_atomic(path, json.dumps(data, ensure_ascii=True, sort_keys=True).encode("ascii"))
    return NEW if changed else KNOWN


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


# ============================================================================ late facts: turns already queued


MAX_LATE_TURNS = 3  # a late fact re-reads at most this many queued turns (the newest that may hold it)
SPAN_SLACK_S = 1.0  # a PermissionRequest is seen between its turn's first and last line (one clock, the hook's start lag)


class Late(NamedTuple):
    keys: list  # the queued turns to read again, newest first
    why: str = ""  # when none: why, for the log
    lost: bool = False  # its turn is no longer tracked: the fact will not show (said at INFO)


def queued_path(paths: Paths, session_id: str) -> str:
    return facts_path(paths, session_id)[: -len(".json")] + ".queued.json"


def write_queued(paths: Paths, session_id: str, transcript: str, sent: dict, spans: dict) -> None:
    """The session's queued turns as late_turns needs them (span, observation ids), beside its
    facts: a fact event reads this small file, not the whole state, to see whether its turn was
    queued already (the usual answer is no: the fact came first). Derived from the cursor,
    written by the worker when that changes; a lost write only means a late fact not merged."""
    turns = {k: dict(spans[k], obs=sorted(sent[k])) for k in sent if isinstance(spans.get(k), dict) and isinstance(sent[k], dict)}
    path = queued_path(paths, session_id)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    body = {"session_id": session_id, "path": transcript, "turns": turns}
    write_atomic(path, json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode("ascii"))


def load_queued(paths: Paths, session_id: str) -> dict:
    data = read_json_file(queued_path(paths, session_id), {})
    ok = isinstance(data, dict) and data.get("session_id") == session_id and isinstance(data.get("turns"), dict)
    return data if ok else {}


def late_turns(event: dict, data: dict, session_id: str, queued: dict) -> Late:
    """The already-queued turns (keys, newest first) a fact just filed may change, found without
    reading the transcript or the state, from the session's queued index (`write_queued`): a tool
    fact by its tool observation id among the queued ones, SubagentStart by the agent
    observation id, a PermissionRequest by time (or, from a subagent, the turn that holds the
    agent), a SessionStart: the queued turns that began after it (until the next one)."""
    name = event.get("hook_event_name")
    spans = {k: v for k, v in (queued.get("turns") or {}).items() if isinstance(v, dict)}
    known = list(reversed(list(spans)))
    if not known:
        return Late([], "no turn of this session was queued yet: merged when its turn is read")

    def holding(kind: str, natural) -> list[str]:
        if not isinstance(natural, str) or not natural:
            return []
        return [k for k in known if observation_id(trace_id_for(session_id, k), kind, natural) in (spans[k].get("obs") or ())]

    def launching(agent_id) -> list[str]:
        return holding("agent", agent_id)

    at = _iso(event.get("fact_at"))
    if name in ("PostToolUse", "PostToolUseFailure"):
        tid = event.get("tool_use_id")
        keys = holding("tool", tid)
        why = f"tool_use_id {tid!r} is in none of the {len(known)} queued turn(s) tracked (not read yet, or unknown)"
    elif name == "SubagentStart":
        aid = event.get("agent_id")
        keys = holding("agent", aid)
        why = f"agent {aid!r} is in none of the {len(known)} queued turn(s) tracked (its launch not read yet, or unknown)"
    elif name == "PermissionRequest":
        keys = launching(event.get("agent_id")) or [k for k in known if _within(at, spans[k], SPAN_SLACK_S)]
        why = f"no queued turn spans {at} (its call not read yet)"
    elif name == "SessionStart":
        later = [s["at"] for s in data.get("session_starts") or [] if isinstance(s, dict) and s.get("at", "") > at]
        until = min(later) if later else None
        keys = [k for k in known if at <= (spans[k].get("t0") or "") and (until is None or (spans[k].get("t0") or "") < until)]
        why = f"no queued turn began after {at}"
    else:
        return Late([], f"{name} facts are merged when the transcript is read")
    if keys:
        return Late(keys[:MAX_LATE_TURNS])
    oldest = spans[known[-1]].get("t0") or ""
    if at and oldest and _seconds(at, oldest) is not None and _seconds(at, oldest) > PERMISSION_MATCH_S:
        # older than every turn still tracked: its turn was queued without it and is left so
        return Late([], f"it is older than the {len(known)} queued turn(s) still tracked (from {oldest}); its turn stays as queued", True)
    return Late([], why)


def _within(at: str, span: dict, slack_s: float) -> bool:
    before_start = _seconds(at, span.get("t0") or "")
    after_end = _seconds(span.get("t1") or span.get("t0") or "", at)
    return before_start is not None and after_end is not None and before_start <= slack_s and after_end <= slack_s
