"""claude-code-langfuse insights: what your Claude Code sessions did, from transcripts or Langfuse.

Reports (all over a time window, optionally one project):
  sessions            the most complex sessions: turns, tool calls, tool errors, active time, tokens, cost
  tools               tool usage and error rates
  search TERM...      per term: the sessions whose prompts mention it, and how many turns they took
  prompts TERM...     prompts containing every term, with the session they belong to
  usage               tokens and cost by day (UTC), model and project

Sources: `--source local` (default) reads the transcripts under ~/.claude/projects with the hook's
own turn grammar, so the numbers are what the hook sends; `--source langfuse` reads a Langfuse v4
server through its public v2 API. Both produce the same plain rows (TurnFact) and the reports run on
those rows only.

Examples:
  insights.py sessions --since 7d
  insights.py search "goal" "tax" --since 30d --markdown
  insights.py prompts csrf --source langfuse --json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .backfill import parse_since, project_opted_out, projects_roots, session_files, transcript_cwd
from .config import Settings, load_settings
from .models import local_cost
from .records import TraceContext, project_name, trace_id_for, turn_record
from .redaction import Redactor, sanitize_record
from .signals import (
    PROMPT_OUTCOMES,
    SCORE_NAMES,
    error_streaks,
    ordered_tools,
    permission_outcome,
    repeated_reads,
    retry_loops,
    spent,
    suggest_rules,
    trace_scores,
    wait_seconds,
)
from .subagents import SubagentFinder
from .transcript import iter_rows
from .turns import group_turns, iso_ms, parse_ts

# ============================================================================ rows


@dataclass
class ToolFact:
    name: str
    is_error: bool = False
    id: str = ""  # tool_use_id
    input: Any = None
    start: str = ""
    end: str = ""
    error: str = ""  # the error text (status message), cut
    permission: dict = field(default_factory=dict)  # decision, source, grant_scope, reason_type, denial_kind
    duration_ms: float | None = None  # the tool's own run time, where known
    wait_ms: float | None = None  # how long Claude waited for the user's answer, where the hook measured it


@dataclass
class GenerationFact:
    model: str
    start: str
    usage_details: dict = field(default_factory=dict)
    cost: float | None = None  # USD; None when unknown


@dataclass
class TurnFact:
    """One turn (one trace), the same whether read from a transcript or from Langfuse."""

    session_id: str
    project: str
    trace_id: str
    turn_number: int
    prompt: str
    start: str  # ISO 8601 UTC with ms
    end: str
    title: str = ""  # the trace name: first prompt line, `/command args` for slash commands
    tools: list = field(default_factory=list)  # ToolFact
    generations: list = field(default_factory=list)  # GenerationFact
    interrupted: bool = False
    cwd: str = ""

    @property
    def duration_s(self) -> float:
        a, b = parse_ts(self.start), parse_ts(self.end)
        return max(0.0, (b - a).total_seconds()) if a and b else 0.0


# ============================================================================ prices (local estimate)

# Prices come from genai-prices through models.local_cost: the same definitions `models sync`
# creates in Langfuse, priced under Langfuse's rules (usage x price per unit, fast-mode and
# long-context tiers). Used only for --source local and labelled an estimate; a model genai-prices
# does not know (or a Python without genai-prices) gets no cost, never a guess.


def estimate_cost(model: str, usage: dict, model_parameters: dict | None = None) -> float | None:
    return local_cost(model, usage, model_parameters)


def usage_tokens(usage: dict) -> dict:
    """input / output / cache read / cache write of one usage_details (server-added keys like `total` ignored)."""
    u = usage or {}
    return {
        "input": int(u.get("input") or 0),
        "output": int(u.get("output") or 0),
        "cache_read": int(u.get("cache_read_input_tokens") or 0),
        "cache_write": int(u.get("input_cache_creation_5m") or 0)
        + int(u.get("input_cache_creation_1h") or 0)
        + int(u.get("cache_creation_input_tokens") or 0),
    }


def total_tokens(usage: dict) -> int:
    return sum(usage_tokens(usage).values())


# ============================================================================ window


class InputError(ValueError):
    """Bad command-line input: the message says what to type instead."""


@dataclass
class Window:
    since: _dt.datetime | None
    until: _dt.datetime | None
    project: str | None = None

    def contains(self, ts: str) -> bool:
        t = parse_ts(ts)
        if t is None:
            return False
        return (self.since is None or t >= self.since) and (self.until is None or t < self.until)


def parse_window(since: str | None, until: str | None, project: str | None) -> Window:
    def one(text: str | None, flag: str) -> _dt.datetime | None:
        if not text:
            return None
        try:
            epoch = parse_since(text)
        except ValueError:
            raise InputError(f"{flag} {text!r}: use a duration like 7d, 12h, 2w (that long ago) or a date like 2026-10-01") from None
        return _dt.datetime.fromtimestamp(epoch, _dt.UTC) if epoch is not None else None

    window = Window(one(since, "--since"), one(until, "--until"), project or None)
    if window.since and window.until and window.until <= window.since:
        raise InputError(f"--until ({iso_ms(window.until)}) must be after --since ({iso_ms(window.since)})")
    return window


# ============================================================================ source: local transcripts


PERMISSION_KEYS = ("decision", "source", "grant_scope", "reason_type", "denial_kind")


def permission_from_meta(meta: dict) -> dict:
    """The permission facts a tool observation's metadata carries (hook versions that record them:
    `permission` {decision, source, grant_scope, ...} or flat `permission.*` / `permission_*` keys)."""
    out: dict = {}
    nested = _unwrap(meta.get("permission")) if isinstance(meta, dict) else None
    if isinstance(nested, dict):
        out.update({k: nested[k] for k in PERMISSION_KEYS if nested.get(k)})
        for theirs, ours in (("grantScope", "grant_scope"), ("reasonType", "reason_type"), ("denialKind", "denial_kind")):
            if nested.get(theirs) and ours not in out:
                out[ours] = nested[theirs]
    for k in PERMISSION_KEYS:
        for name in (f"permission.{k}", f"permission_{k}"):
            v = _unwrap(meta.get(name)) if isinstance(meta, dict) else None
            if v and k not in out:
                out[k] = v
    label = _unwrap(meta.get("permission")) if isinstance(meta, dict) else None
    if isinstance(label, str) and label and "decision" not in out:  # the hook's label: approved-once, rejected-by-user, ...
        if label.startswith("approved"):
            out.update(decision="accept", source="user")
        elif label.startswith("allowed"):
            out.update(decision="accept", source="config")
        elif label == "rejected-by-user":
            out.update(decision="reject", source="user")
        elif label.startswith("rejected"):
            out.update(decision="reject", source="config")
    for name in ("tool_denial_kind", "denial_kind"):
        v = _unwrap(meta.get(name)) if isinstance(meta, dict) else None
        if v and "denial_kind" not in out:
            out["denial_kind"] = v
    return {k: v for k, v in out.items() if isinstance(v, (str, bool))}


def _duration_ms(meta: dict) -> float | None:
    for name in ("duration_ms", "tool_duration_ms"):
        v = _unwrap(meta.get(name)) if isinstance(meta, dict) else None
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def permission_from_row(d: dict) -> dict:
    """The permission facts Claude Code wrote on a tool_result line."""
    out: dict = {}
    pd = d.get("permissionDecision")
    if isinstance(pd, dict):
        for theirs, ours in (("decision", "decision"), ("source", "source"), ("grantScope", "grant_scope"), ("reasonType", "reason_type")):
            if isinstance(pd.get(theirs), str) and pd[theirs]:
                out[ours] = pd[theirs]
    if isinstance(d.get("toolDenialKind"), str) and d["toolDenialKind"]:
        out["denial_kind"] = d["toolDenialKind"]
    return out


def _tool_fact(o: dict, permissions: dict | None = None) -> ToolFact:
    meta = o.get("metadata") if isinstance(o.get("metadata"), dict) else {}
    tool_use_id = str(_unwrap(meta.get("tool_use_id")) or "")
    permission = permission_from_meta(meta) or dict((permissions or {}).get(tool_use_id) or {})
    status = o.get("status_message") or ""
    return ToolFact(
        o["name"],
        o.get("level") == "ERROR",
        id=tool_use_id,
        input=o.get("input"),
        start=o.get("start") or "",
        end=o.get("end") or o.get("start") or "",
        error=status[:300] if isinstance(status, str) else "",
        permission=permission,
        duration_ms=_duration_ms(meta),
        wait_ms=_number(meta.get("permission_wait_ms")),
    )


def _number(value: Any) -> float | None:
    value = _unwrap(value)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def fact_from_record(record: dict, permissions: dict | None = None) -> TurnFact:
    """A hook queue record (what would be sent) -> the plain row the reports use.
    `permissions`: tool_use_id -> permission facts read from the transcript (records of hook
    versions that do not carry them in the tool's metadata)."""
    obs = record["observations"]
    root = obs[0]
    trace = record["trace"]
    meta = trace.get("metadata") or {}
    prompt = root.get("input")
    tools = [_tool_fact(o, permissions) for o in obs if o["type"] == "tool"]
    gens = []
    for o in obs:
        if o["type"] == "generation":
            usage = dict(o.get("usage_details") or {})
            model = o.get("model") or o.get("name") or ""
            params = o.get("model_parameters") if isinstance(o.get("model_parameters"), dict) else {}
            if not params.get("speed") and (o.get("metadata") or {}).get("speed"):
                params = {**params, "speed": o["metadata"]["speed"]}  # records from before model parameters were sent
            gens.append(GenerationFact(model, o.get("start") or root["start"], usage, estimate_cost(model, usage, params)))
    return TurnFact(
        session_id=trace.get("session_id") or "",
        project=str(meta.get("project") or ""),
        trace_id=trace["id"],
        turn_number=int(meta.get("turn_number") or 0),
        prompt=prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False),
        start=root["start"],
        end=root["end"] or root["start"],
        title=trace.get("name") or "",
        tools=tools,
        generations=gens,
        interrupted=bool((root.get("metadata") or {}).get("interrupted")),
        cwd=str(meta.get("cwd") or ""),
    )


def local_facts(window: Window, roots: list[str] | None = None, settings: Settings | None = None) -> list[TurnFact]:
    """Every turn of every main transcript whose start lies in the window, as the hook would send it."""
    settings = settings or load_settings()
    try:
        redactor = Redactor(settings.redact, settings.redact_patterns)
    except ValueError as e:
        raise InputError(f"{e}; fix CC_LANGFUSE_REDACT_PATTERNS") from None
    roots = projects_roots() if roots is None else roots
    facts: list[TurnFact] = []
    for path in session_files(roots):
        try:
            if window.since and os.stat(path).st_mtime < window.since.timestamp():
                continue  # not written since the window opened: no turn can start in it
        except OSError:
            continue
        session_id = os.path.basename(path)[: -len(".jsonl")]
        fallback_cwd = transcript_cwd(path)
        if project_opted_out(fallback_cwd):
            continue  # the user keeps this project out of the record: out of the report too
        finder = SubagentFinder(path, session_id)
        try:
            f = open(path, "rb")
        except OSError:
            continue
        with f:
            permissions: dict = {}  # tool_use_id -> what Claude Code recorded about the permission
            # numbered like the hook numbers them when it reads a transcript from its start
            for number, turn in enumerate(group_turns(_tap_permissions(iter_rows(f, 0), permissions)), 1):
                if not window.contains(turn.start):
                    continue
                project = project_name(turn.meta_row.get("cwd") or fallback_cwd)
                if window.project and project != window.project:
                    continue
                finder.attach(turn)
                ctx = TraceContext(session_id, settings.user_id, project, number, trace_id_for(session_id, turn.key))
                record = sanitize_record(turn_record(turn, ctx), redactor, settings.max_field_chars)
                facts.append(fact_from_record(record, permissions))
    return facts


def _tap_permissions(rows: Iterable[Any], into: dict) -> Iterable[Any]:
    """Pass the rows on; note the permission facts of each tool_result line on the way."""
    for row in rows:
        d = row.data
        if d.get("type") == "user" and ("permissionDecision" in d or "toolDenialKind" in d):
            content = (d.get("message") or {}).get("content")
            facts = permission_from_row(d)
            if facts and isinstance(content, list):
                for b in content:
                    if isinstance(b, dict) and b.get("type") == "tool_result" and isinstance(b.get("tool_use_id"), str):
                        into[b["tool_use_id"]] = facts
        yield row


# ============================================================================ source: Langfuse v4


class SourceError(RuntimeError):
    """The source could not be read; the message says what to do."""


PAGE_LIMIT = 1000
ROOT_FIELDS = "core,basic,io,metadata,trace_context"
CHILD_FIELDS = "core,basic,model,usage"
TOOL_FIELDS = "core,basic,io,metadata"  # tool inputs and permission facts: retry loops, re-reads, friction
# children start after their root; a turn that started in the window may run past its end
CHILD_SLACK = _dt.timedelta(days=1)


def _unwrap(value: Any) -> Any:
    """Metadata values and inputs may come back JSON-encoded ("\\"x\\"", "3"); decode when they are."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _iso(t: _dt.datetime | None) -> str:
    if t is None:
        return ""
    return iso_ms(t if t.tzinfo else t.replace(tzinfo=_dt.UTC))


def generation_cost(o: Any) -> float | None:
    if getattr(o, "total_cost", None) is not None:
        return float(o.total_cost)
    details = getattr(o, "cost_details", None) or {}
    if "total" in details:
        return float(details["total"])
    return float(sum(details.values())) if details else None


def facts_from_observations(roots: Iterable[Any], children: Iterable[Any], window: Window) -> list[TurnFact]:
    """Langfuse v2 observations (SDK ObservationV2 models) -> TurnFacts; one per turn root."""
    facts: dict[str, TurnFact] = {}
    for r in roots:
        if r.parent_observation_id or not r.trace_id:
            continue  # a subagent's top observation, not a turn
        if PRODUCT_TAG not in (r.tags or []):
            continue  # another application's trace in a shared project
        meta = r.metadata or {}
        project = _unwrap(meta.get("project"))
        if not project:
            project = next((t for t in (r.tags or []) if t not in ("claude-code", "task-notification")), "")
        if window.project and project != window.project:
            continue
        start = _iso(r.start_time)
        if not window.contains(start):
            continue
        prompt = _unwrap(r.input) if r.input is not None else ""
        try:
            number = int(_unwrap(meta.get("turn_number")) or 0)
        except (TypeError, ValueError):
            number = 0
        facts[r.trace_id] = TurnFact(
            session_id=r.session_id or "",
            project=str(project or ""),
            trace_id=r.trace_id,
            turn_number=number,
            prompt=prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False),
            start=start,
            end=_iso(r.end_time) or start,
            title=r.trace_name or r.name or "",
            interrupted=_unwrap(meta.get("interrupted")) is True,
            cwd=str(_unwrap(meta.get("cwd")) or ""),
        )
    for c in sorted(children, key=lambda o: (o.start_time, o.id)):
        fact = facts.get(c.trace_id or "")
        if fact is None:
            continue
        kind = (c.type or "").upper()
        if kind == "TOOL":
            meta = c.metadata if isinstance(getattr(c, "metadata", None), dict) else {}
            fact.tools.append(
                _tool_fact(
                    {
                        "name": c.name or "tool",
                        "level": c.level,
                        "metadata": meta,
                        "input": _unwrap(getattr(c, "input", None)),
                        "start": _iso(c.start_time),
                        "end": _iso(getattr(c, "end_time", None)) or _iso(c.start_time),
                        "status_message": getattr(c, "status_message", None) or "",
                    }
                )
            )
        elif kind == "GENERATION":
            fact.generations.append(
                GenerationFact(c.model or c.name or "", _iso(c.start_time), dict(c.usage_details or {}), generation_cost(c))
            )
    return list(facts.values())


PRODUCT_TAG = "claude-code"  # every trace this hook sends carries it


def product_filter(since: _dt.datetime | None, until: _dt.datetime | None, **column: Any) -> str:
    """The v2 `filter` for this product's observations. Langfuse takes it over the plain query
    parameters, so it repeats them (type / isRootObservation, the time window); the query parameters
    stay for a server that ignores `filter`, and facts_from_observations checks the tag again."""
    conditions: list[dict] = [{"type": "arrayOptions", "column": "traceTags", "operator": "any of", "value": [PRODUCT_TAG]}]
    for name, value in column.items():
        kind = "boolean" if isinstance(value, bool) else "string"
        conditions.append({"type": kind, "column": name, "operator": "=", "value": value})
    if since is not None:
        conditions.append({"type": "datetime", "column": "startTime", "operator": ">=", "value": _iso(since)})
    if until is not None:
        conditions.append({"type": "datetime", "column": "startTime", "operator": "<", "value": _iso(until)})
    return json.dumps(conditions)


def _fetch_all(api: Any, **params: Any) -> list[Any]:
    out: list[Any] = []
    cursor = None
    while True:
        page = api.observations.get_many(limit=PAGE_LIMIT, cursor=cursor, **params)
        out.extend(page.data)
        cursor = page.meta.cursor if page.meta else None
        if not cursor or not page.data:
            return out


def langfuse_facts(window: Window, settings: Settings | None = None, tool_io: bool = False) -> list[TurnFact]:
    """tool_io: also fetch tool inputs and metadata (friction, problems, scores); tool outputs can be
    huge, so the other reports never ask for them."""
    settings = settings or load_settings()
    if not settings.has_keys:
        raise InputError(
            "--source langfuse needs Langfuse keys: set CC_LANGFUSE_PUBLIC_KEY / CC_LANGFUSE_SECRET_KEY "
            f"(or the config file {settings.config_path}); or use --source local"
        )
    try:
        import httpx
        from langfuse import Langfuse
        from langfuse.api.core.api_error import ApiError
    except ImportError as e:
        raise SourceError(
            f"the langfuse SDK is not importable by {sys.executable} ({e}); run this script with the hook's venv "
            "python (~/.claude/langfuse/venv/bin/python) or use --source local"
        ) from None
    lf = Langfuse(
        public_key=settings.public_key,
        secret_key=settings.secret_key,
        base_url=settings.base_url,
        timeout=max(1, int(settings.timeout)),
        tracing_enabled=False,
    )
    since = window.since
    until = window.until
    try:
        roots = _fetch_all(
            lf.api,
            fields=ROOT_FIELDS,
            is_root_observation=True,
            from_start_time=since,
            to_start_time=until,
            filter=product_filter(since, until, isRootObservation=True),
        )
        child_until = until + CHILD_SLACK if until else None
        children: list[Any] = []
        for kind in ("TOOL", "GENERATION"):
            children += _fetch_all(
                lf.api,
                fields=TOOL_FIELDS if kind == "TOOL" and tool_io else CHILD_FIELDS,
                type=kind,
                from_start_time=since,
                to_start_time=child_until,
                filter=product_filter(since, child_until, type=kind),
            )
    except ApiError as e:
        status = e.status_code
        if status in (401, 403):
            raise SourceError(
                f"Langfuse at {settings.base_url} rejected the keys (HTTP {status}): check CC_LANGFUSE_PUBLIC_KEY / "
                "CC_LANGFUSE_SECRET_KEY belong to this server's project"
            ) from None
        if status == 404:
            raise SourceError(
                f"Langfuse at {settings.base_url} has no /api/public/v2/observations (HTTP 404): insights need a "
                "Langfuse v4 server; use --source local meanwhile"
            ) from None
        raise SourceError(f"Langfuse at {settings.base_url} answered HTTP {status}: {str(e.body)[:300]}") from None
    except httpx.HTTPError as e:
        raise SourceError(
            f"cannot reach Langfuse at {settings.base_url} ({type(e).__name__}: {e}); is the server up? or use --source local"
        ) from None
    return facts_from_observations(roots, children, window)


# ============================================================================ reports

# A column: key in the row dict, header, kind (text|int|dur|cost|pct|time)
Col = tuple


@dataclass
class Table:
    title: str
    columns: list
    rows: list


@dataclass
class Report:
    name: str
    tables: list
    notes: list = field(default_factory=list)


def _cost_sum(values: Iterable[float | None]) -> float | None:
    values = list(values)
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _fact_tokens(f: TurnFact) -> int:
    return sum(total_tokens(g.usage_details) for g in f.generations)


def _fact_cost(f: TurnFact) -> float | None:
    return _cost_sum(g.cost for g in f.generations)


def _first_line(text: str, width: int = 70) -> str:
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


def _by_session(facts: list[TurnFact]) -> dict[str, list[TurnFact]]:
    out: dict[str, list[TurnFact]] = {}
    for f in sorted(facts, key=lambda f: (f.start, f.trace_id)):
        out.setdefault(f.session_id, []).append(f)
    return out


def session_row(sid: str, turns: list[TurnFact]) -> dict:
    tools = [t for f in turns for t in f.tools]
    return {
        "session_id": sid,
        "project": turns[0].project,
        "first": turns[0].start,
        "last": max(f.end for f in turns),
        "turns": len(turns),
        "tool_calls": len(tools),
        "tool_errors": sum(t.is_error for t in tools),
        "duration_s": round(sum(f.duration_s for f in turns), 3),
        "tokens": sum(_fact_tokens(f) for f in turns),
        "cost": _cost_sum(_fact_cost(f) for f in turns),
        "first_prompt": _first_line(turns[0].title or turns[0].prompt),
    }


SESSION_SORTS = {
    "turns": ("turns", "tool_calls"),
    "tools": ("tool_calls", "turns"),
    "errors": ("tool_errors", "tool_calls"),
    "duration": ("duration_s", "turns"),
    "tokens": ("tokens", "turns"),
    "cost": ("cost", "tokens"),
}
SESSION_COLS = [
    ("session_id", "session", "text"),
    ("project", "project", "text"),
    ("first", "started", "time"),
    ("turns", "turns", "int"),
    ("tool_calls", "tools", "int"),
    ("tool_errors", "errors", "int"),
    ("duration_s", "active", "dur"),
    ("tokens", "tokens", "int"),
    ("cost", "cost", "cost"),
    ("first_prompt", "first prompt", "text"),
]


def report_sessions(facts: list[TurnFact], sort: str = "turns", limit: int = 10) -> Report:
    keys = SESSION_SORTS[sort]
    rows = [session_row(sid, turns) for sid, turns in _by_session(facts).items()]
    rows.sort(key=lambda r: tuple(-(r[k] or 0) for k in keys) + (r["session_id"],))
    notes = [
        f"{len(rows)} session(s), {len(facts)} turn(s) in the window; sorted by {sort}"
        + (f"; showing the top {limit}" if len(rows) > limit else "")
    ]
    return Report("sessions", [Table("Most complex sessions", SESSION_COLS, rows[:limit])], notes)


def report_tools(facts: list[TurnFact], limit: int = 50) -> Report:
    stats: dict[str, dict] = {}
    for f in facts:
        for t in f.tools:
            s = stats.setdefault(t.name, {"tool": t.name, "calls": 0, "errors": 0, "sessions": set()})
            s["calls"] += 1
            s["errors"] += int(t.is_error)
            s["sessions"].add(f.session_id)
    rows = []
    for s in stats.values():
        rows.append(
            {
                "tool": s["tool"],
                "calls": s["calls"],
                "errors": s["errors"],
                "error_rate": round(s["errors"] / s["calls"], 4),
                "sessions": len(s["sessions"]),
            }
        )
    rows.sort(key=lambda r: (-r["calls"], -r["errors"], r["tool"]))
    calls = sum(r["calls"] for r in rows)
    errors = sum(r["errors"] for r in rows)
    notes = [f"{calls} tool call(s), {errors} error(s)" + (f" ({errors / calls:.1%})" if calls else "") + f" in {len(facts)} turn(s)"]
    cols = [
        ("tool", "tool", "text"),
        ("calls", "calls", "int"),
        ("errors", "errors", "int"),
        ("error_rate", "error rate", "pct"),
        ("sessions", "sessions", "int"),
    ]
    return Report("tools", [Table("Tool usage and errors", cols, rows[:limit])], notes)


def _matches(text: str, term: str) -> bool:
    return term.casefold() in (text or "").casefold()


def report_search(facts: list[TurnFact], terms: list[str]) -> Report:
    sessions = _by_session(facts)
    summary, tables = [], []
    cols = [
        ("session_id", "session", "text"),
        ("project", "project", "text"),
        ("first", "started", "time"),
        ("turns", "turns", "int"),
        ("matching_turns", "matching", "int"),
        ("tool_calls", "tools", "int"),
        ("duration_s", "active", "dur"),
        ("first_match", "first matching prompt", "text"),
    ]
    for term in terms:
        rows = []
        for sid, turns in sessions.items():
            hits = [f for f in turns if _matches(f.prompt, term)]
            if not hits:
                continue
            row = session_row(sid, turns)
            rows.append(
                {k: row[k] for k in ("session_id", "project", "first", "turns", "tool_calls", "duration_s")}
                | {"matching_turns": len(hits), "first_match": _first_line(hits[0].title or hits[0].prompt)}
            )
        rows.sort(key=lambda r: r["first"])
        summary.append(
            {
                "term": term,
                "sessions": len(rows),
                "turns": sum(r["turns"] for r in rows),
                "matching_turns": sum(r["matching_turns"] for r in rows),
                "tool_calls": sum(r["tool_calls"] for r in rows),
                "duration_s": round(sum(r["duration_s"] for r in rows), 3),
            }
        )
        tables.append(Table(f"Sessions whose prompts mention {term!r}", cols, rows))
    sum_cols = [
        ("term", "term", "text"),
        ("sessions", "sessions", "int"),
        ("turns", "turns", "int"),
        ("matching_turns", "matching turns", "int"),
        ("tool_calls", "tools", "int"),
        ("duration_s", "active", "dur"),
    ]
    notes = ["turns = all turns of the matching sessions in the window; matching = turns whose prompt contains the term (case-insensitive)"]
    return Report("search", [Table("Turns per search term", sum_cols, summary)] + tables, notes)


def report_prompts(facts: list[TurnFact], terms: list[str], limit: int = 50) -> Report:
    rows = []
    for f in sorted(facts, key=lambda f: (f.start, f.trace_id)):
        if all(_matches(f.prompt, t) for t in terms):
            line = next((ln.strip() for ln in f.prompt.splitlines() if _matches(ln, terms[0])), _first_line(f.prompt))
            rows.append(
                {
                    "start": f.start,
                    "session_id": f.session_id,
                    "project": f.project,
                    "turn": f.turn_number,
                    "trace_id": f.trace_id,
                    "prompt": line if len(line) <= 100 else line[:99] + "…",
                }
            )
    notes = [
        f"{len(rows)} prompt(s) contain "
        + " and ".join(repr(t) for t in terms)
        + (f"; showing the last {limit}" if len(rows) > limit else "")
    ]
    cols = [
        ("start", "time", "time"),
        ("session_id", "session", "text"),
        ("project", "project", "text"),
        ("turn", "turn", "int"),
        ("prompt", "prompt", "text"),
    ]
    return Report("prompts", [Table("Matching prompts", cols, rows[-limit:])], notes)


USAGE_DIMS = ("day", "model", "project")


def report_usage(facts: list[TurnFact], by: tuple = USAGE_DIMS) -> Report:
    groups: dict[tuple, dict] = {}
    unpriced = set()
    for f in facts:
        for g in f.generations:
            key_values = {"day": (g.start or f.start)[:10], "model": g.model or "(unknown)", "project": f.project or "(none)"}
            key = tuple(key_values[d] for d in by)
            row = groups.setdefault(
                key,
                {
                    **{d: key_values[d] for d in by},
                    "generations": 0,
                    "input": 0,
                    "output": 0,
                    "cache_read": 0,
                    "cache_write": 0,
                    "tokens": 0,
                    "cost": None,
                },
            )
            tok = usage_tokens(g.usage_details)
            row["generations"] += 1
            for k, v in tok.items():
                row[k] += v
            row["tokens"] += sum(tok.values())
            if g.cost is not None:
                row["cost"] = (row["cost"] or 0.0) + g.cost
            elif tok and sum(tok.values()):
                unpriced.add(g.model or "(unknown)")
    rows = [groups[k] for k in sorted(groups)]
    total = {d: "" for d in by} | {by[0]: "total"} if rows else None
    if total is not None:
        for k in ("generations", "input", "output", "cache_read", "cache_write", "tokens"):
            total[k] = sum(r[k] for r in rows)
        total["cost"] = _cost_sum(r["cost"] for r in rows)
    cols = [(d, d + (" (UTC)" if d == "day" else ""), "text") for d in by] + [
        ("generations", "calls", "int"),
        ("input", "input", "int"),
        ("output", "output", "int"),
        ("cache_read", "cache read", "int"),
        ("cache_write", "cache write", "int"),
        ("tokens", "total tokens", "int"),
        ("cost", "cost", "cost"),
    ]
    notes = []
    if unpriced:
        notes.append("no price known for: " + ", ".join(sorted(unpriced)) + " (their cost is left out, not guessed)")
    tables = [Table("Tokens and cost by " + ", ".join(by), cols, rows + ([total] if total else []))]
    return Report("usage", tables, notes)


# ============================================================================ friction, problems, scores


def _outcome_counts(rows: dict, key: Any, tool: ToolFact, base: dict) -> None:
    outcome = permission_outcome(tool)
    if outcome not in PROMPT_OUTCOMES and outcome != "denied":
        return
    row = rows.setdefault(key, dict(base, prompts=0, approved=0, rejected=0, unasked=0, denied=0, wait_s=0.0))
    row[outcome] += 1
    row["prompts"] += outcome in PROMPT_OUTCOMES
    row["wait_s"] = round(row["wait_s"] + wait_seconds(tool), 3)


FRICTION_COLS = [
    ("prompts", "prompts", "int"),
    ("approved", "approved", "int"),
    ("rejected", "rejected", "int"),
    ("unasked", "denied unasked", "int"),
    ("denied", "deny rule", "int"),
    ("wait_s", "waited", "dur"),
]


def report_friction(facts: list[TurnFact], limit: int = 20) -> Report:
    by_tool: dict = {}
    by_project: dict = {}
    rules: dict = {}
    refused_rules: set = set()
    calls = allowed = 0
    for f in facts:
        for t in f.tools:
            calls += 1
            outcome = permission_outcome(t)
            allowed += outcome == "allowed"
            _outcome_counts(by_tool, t.name, t, {"tool": t.name})
            _outcome_counts(by_project, f.project or "(none)", t, {"project": f.project or "(none)"})
            if outcome in ("approved", "unasked"):
                for rule in suggest_rules(t, f.cwd):
                    r = rules.setdefault(rule, {"rule": rule, "prompts": 0, "approved": 0, "wait_s": 0.0, "projects": set(), "example": ""})
                    r["prompts"] += 1
                    r["approved"] += outcome == "approved"
                    r["wait_s"] = round(r["wait_s"] + wait_seconds(t), 3)
                    r["projects"].add(f.project or "(none)")
                    if not r["example"]:
                        r["example"] = _first_line(
                            t.input.get("command")
                            if isinstance(t.input, dict) and "command" in t.input
                            else json.dumps(t.input, ensure_ascii=False, default=str),
                            60,
                        )
            elif outcome == "rejected":
                refused_rules.update(suggest_rules(t, f.cwd))
    tool_rows = sorted(by_tool.values(), key=lambda r: (-r["prompts"], -r["wait_s"], r["tool"]))
    project_rows = sorted(by_project.values(), key=lambda r: (-r["prompts"], -r["wait_s"], r["project"]))
    rule_rows = []
    for r in sorted(rules.values(), key=lambda r: (-r["prompts"], -r["wait_s"], r["rule"])):
        if r["rule"] in refused_rules:
            continue  # the user said no to a call this rule would allow: never suggest it
        rule_rows.append({**r, "projects": ", ".join(sorted(r["projects"]))})
    prompts = sum(r["prompts"] for r in tool_rows)
    waited = sum(r["wait_s"] for r in tool_rows)
    notes = [
        f"{prompts} permission prompt(s) in {calls} tool call(s) ({allowed} let through by a rule or the mode); "
        f"{sum(r['approved'] for r in tool_rows)} approved, {sum(r['rejected'] for r in tool_rows)} rejected by the user, "
        f"{sum(r['unasked'] for r in tool_rows)} denied with nobody to ask (-p / no dialog); "
        f"Claude waited {fmt_value(waited, 'dur')} for answers",
        "rules: add to permissions.allow in .claude/settings.json (project) or ~/.claude/settings.json; "
        "a rule that covers a call the user rejected is not suggested",
    ]
    tables = [
        Table("Permission prompts by tool", [("tool", "tool", "text")] + FRICTION_COLS, tool_rows[:limit]),
        Table("Permission prompts by project", [("project", "project", "text")] + FRICTION_COLS, project_rows[:limit]),
        Table(
            "Allow rules that would have saved the most prompts",
            [
                ("rule", "rule", "text"),
                ("prompts", "prompts saved", "int"),
                ("approved", "approved", "int"),
                ("wait_s", "wait saved", "dur"),
                ("projects", "projects", "text"),
                ("example", "example", "text"),
            ],
            rule_rows[:limit],
        ),
    ]
    return Report("friction", tables, notes)


def _spent_row(pairs: list, tokens_from: str = "calls") -> dict:
    tokens, cost, gens = spent(pairs, total_tokens)
    return {"tokens": tokens, "cost": cost, "model_calls": gens}


SPENT_COLS = [("model_calls", "model calls", "int"), ("tokens", "tokens", "int"), ("cost", "cost", "cost")]


def report_problems(facts: list[TurnFact], minimum: int = 3, limit: int = 20) -> Report:
    loops, reads, streaks, interrupts = [], [], [], []
    for sid, turns in _by_session(facts).items():
        pairs = ordered_tools(turns)
        for group in retry_loops(pairs, minimum):
            first = group[0][1]
            text = json.dumps(first.input, ensure_ascii=False, default=str) if not isinstance(first.input, str) else first.input
            loops.append(
                {
                    "session_id": sid,
                    "project": turns[0].project,
                    "first": first.start,
                    "tool": first.name,
                    "calls": len(group),
                    "errors": sum(t.is_error for _, t in group),
                    "turns": len({id(tn) for tn, _ in group}),
                    "input": _first_line(text, 60),
                }
                | _spent_row(group[1:])  # what the repeats cost
            )
        for path, calls, edits in repeated_reads(pairs, minimum):
            reads.append(
                {
                    "session_id": sid,
                    "project": turns[0].project,
                    "file": path,
                    "reads": len(calls),
                    "edits_between": edits,
                    "first": calls[0][1].start,
                }
                | _spent_row(calls[1:])
            )
        for run in error_streaks(pairs, minimum):
            tools = list(dict.fromkeys(t.name for _, t in run))
            streaks.append(
                {
                    "session_id": sid,
                    "project": turns[0].project,
                    "first": run[0][1].start,
                    "length": len(run),
                    "tools": ", ".join(tools),
                    "first_error": _first_line(run[0][1].error, 60),
                }
                | _spent_row(run)
            )
        for f in turns:
            if not f.interrupted:
                continue
            cause = "permission rejected" if any(permission_outcome(t) == "rejected" for t in f.tools) else "Esc"
            last_tool = f.tools[-1].name if f.tools else ""
            interrupts.append(
                {
                    "session_id": sid,
                    "project": f.project,
                    "start": f.start,
                    "turn": f.turn_number,
                    "cause": cause,
                    "last_tool": last_tool,
                    "duration_s": f.duration_s,
                    "prompt": _first_line(f.title or f.prompt, 50),
                    "model_calls": len(f.generations),
                    "tokens": _fact_tokens(f),
                    "cost": _fact_cost(f),
                }
            )
    where = [("session_id", "session", "text"), ("project", "project", "text")]
    loops.sort(key=lambda r: (-r["calls"], -(r["tokens"] or 0)))
    reads.sort(key=lambda r: (-r["reads"], -(r["tokens"] or 0)))
    streaks.sort(key=lambda r: (-r["length"], -(r["tokens"] or 0)))
    interrupts.sort(key=lambda r: r["start"])
    tables = [
        Table(
            f"Retry loops: the same tool with the same input {minimum}+ times in a session",
            where
            + [
                ("first", "first", "time"),
                ("tool", "tool", "text"),
                ("calls", "calls", "int"),
                ("errors", "errors", "int"),
                ("turns", "turns", "int"),
                ("input", "input", "text"),
            ]
            + SPENT_COLS,
            loops[:limit],
        ),
        Table(
            f"Files read {minimum}+ times in a session",
            where + [("file", "file", "text"), ("reads", "reads", "int"), ("edits_between", "edits between", "int")] + SPENT_COLS,
            reads[:limit],
        ),
        Table(
            f"Error streaks: {minimum}+ failing tool calls in a row",
            where
            + [("first", "first", "time"), ("length", "errors", "int"), ("tools", "tools", "text"), ("first_error", "first error", "text")]
            + SPENT_COLS,
            streaks[:limit],
        ),
        Table(
            "Turns interrupted by the user",
            where
            + [
                ("start", "time", "time"),
                ("turn", "turn", "int"),
                ("cause", "cause", "text"),
                ("last_tool", "last tool", "text"),
                ("duration_s", "active", "dur"),
                ("prompt", "prompt", "text"),
            ]
            + SPENT_COLS,
            interrupts[-limit:],
        ),
    ]
    notes = [
        f"{len(loops)} retry loop(s), {len(reads)} file(s) read repeatedly, {len(streaks)} error streak(s), "
        f"{len(interrupts)} interrupted turn(s) in {len(facts)} turn(s)",
        "tokens and cost: of the model calls that issued the repeated calls (after the first), the failing calls, "
        "or the whole interrupted turn; permission refusals are friction, not errors (`insights friction`)",
    ]
    return Report("problems", tables, notes)


SCORE_COLS = [
    ("name", "score", "text"),
    ("traces", "traces", "int"),
    ("nonzero", "non-zero", "int"),
    ("total", "total", "num"),
]


def report_scores(rows: list[dict], pushed: str = "") -> Report:
    by_name: dict = {}
    per_trace: dict = {}
    for r in rows:
        s = by_name.setdefault(r["name"], {"name": r["name"], "traces": 0, "nonzero": 0, "total": 0.0})
        value = float(r["value"] or 0)
        s["traces"] += 1
        s["nonzero"] += value != 0
        s["total"] = round(s["total"] + value, 3)
        if value:
            t = per_trace.setdefault(
                r["trace_id"],
                {"trace_id": r["trace_id"], "session_id": r.get("session_id") or "", "start": r.get("start") or "", "scores": []},
            )
            t["scores"].append(f"{r['name']}={value:g}")
    summary = [by_name[n] for n in SCORE_NAMES if n in by_name] + [v for k, v in sorted(by_name.items()) if k not in SCORE_NAMES]
    traces = sorted(per_trace.values(), key=lambda t: (t["start"], t["trace_id"]))
    for t in traces:
        t["scores"] = ", ".join(t["scores"])
    tables = [
        Table("Scores per name", SCORE_COLS, summary),
        Table(
            "Traces with a non-zero score",
            [("start", "time", "time"), ("session_id", "session", "text"), ("trace_id", "trace", "text"), ("scores", "scores", "text")],
            traces,
        ),
    ]
    notes = [pushed] if pushed else []
    return Report("scores", tables, notes)


class PushError(RuntimeError):
    pass


def push_scores(rows: list[dict], settings: Settings) -> int:
    """POST every score (deterministic ids: Langfuse updates a score it has). Returns how many were sent."""
    if not settings.has_keys:
        raise InputError("--push needs Langfuse keys: set CC_LANGFUSE_PUBLIC_KEY / CC_LANGFUSE_SECRET_KEY")
    try:
        import httpx
    except ImportError as e:
        raise SourceError(f"httpx is not importable by {sys.executable} ({e}); run this with the hook's venv python") from None
    base = settings.base_url.rstrip("/")
    sent = 0
    try:
        with httpx.Client(auth=(settings.public_key, settings.secret_key), timeout=settings.timeout) as http:
            for r in rows:
                body = {
                    "id": r["id"],
                    "traceId": r["trace_id"],
                    "name": r["name"],
                    "value": r["value"],
                    "dataType": r["data_type"],
                    "comment": "claude-code-langfuse insights",
                }
                if r.get("session_id"):
                    body["metadata"] = {"session_id": r["session_id"], "project": r.get("project") or ""}
                response = http.post(base + "/api/public/scores", json=body)
                if response.status_code in (401, 403):
                    raise PushError(
                        f"Langfuse at {base} rejected the keys (HTTP {response.status_code}); {sent} score(s) sent before; "
                        "check CC_LANGFUSE_PUBLIC_KEY / CC_LANGFUSE_SECRET_KEY"
                    )
                if not 200 <= response.status_code < 300:
                    raise PushError(
                        f"Langfuse at {base} answered HTTP {response.status_code} for score {r['name']} of trace {r['trace_id']}: "
                        f"{' '.join(response.text.split())[:200]}; {sent} score(s) sent before; run again (ids are fixed, nothing doubles)"
                    )
                sent += 1
    except httpx.HTTPError as e:
        raise PushError(f"cannot reach Langfuse at {base} ({type(e).__name__}: {e}); {sent} score(s) sent before; run again") from None
    return sent


def langfuse_scores(window: Window, settings: Settings | None = None) -> list[dict]:
    """The scores this tool pushed, read back from Langfuse (GET /api/public/v3/scores, by name, from the window start)."""
    settings = settings or load_settings()
    if not settings.has_keys:
        raise InputError("--source langfuse needs Langfuse keys: set CC_LANGFUSE_PUBLIC_KEY / CC_LANGFUSE_SECRET_KEY")
    import httpx

    base = settings.base_url.rstrip("/")
    rows: list[dict] = []
    cursor = None
    try:
        with httpx.Client(auth=(settings.public_key, settings.secret_key), timeout=settings.timeout) as http:
            for _ in range(10000):
                params = {"name": ",".join(SCORE_NAMES), "fields": "subject,details", "limit": 100}
                if window.since:
                    params["fromTimestamp"] = _iso(window.since)
                if window.until:
                    params["toTimestamp"] = _iso(window.until + CHILD_SLACK)
                if cursor:
                    params["cursor"] = cursor
                response = http.get(base + "/api/public/v3/scores", params=params)
                if response.status_code in (401, 403):
                    raise SourceError(f"Langfuse at {base} rejected the keys (HTTP {response.status_code})")
                if response.status_code == 404:
                    raise SourceError(
                        f"Langfuse at {base} has no /api/public/v3/scores (HTTP 404): reading scores needs a Langfuse v4 server"
                    )
                if response.status_code != 200:
                    raise SourceError(f"Langfuse at {base} answered HTTP {response.status_code}: {response.text[:300]}")
                body = response.json()
                for s in body.get("data") or []:
                    subject = s.get("subject") or {}
                    trace_id = (
                        subject.get("traceId") or (subject.get("id") if subject.get("kind") == "trace" else "") or s.get("traceId") or ""
                    )
                    value = s.get("value")
                    value = (1 if value else 0) if isinstance(value, bool) else value
                    if window.project and (s.get("metadata") or {}).get("project") not in (None, window.project):
                        continue
                    rows.append(
                        {
                            "id": s.get("id"),
                            "trace_id": trace_id,
                            "name": s.get("name"),
                            "value": value,
                            "data_type": s.get("dataType"),
                            "session_id": (s.get("metadata") or {}).get("session_id") or "",
                            "start": s.get("timestamp") or "",
                        }
                    )
                cursor = (body.get("meta") or {}).get("cursor")
                if not cursor or not body.get("data"):
                    break
    except httpx.HTTPError as e:
        raise SourceError(f"cannot reach Langfuse at {base} ({type(e).__name__}: {e}); is the server up?") from None
    return rows


# ============================================================================ output


def fmt_value(value: Any, kind: str) -> str:
    if value is None or value == "":
        return "—" if kind in ("cost", "int", "dur", "pct") and value is None else ""
    if kind == "int":
        return f"{value:,}"
    if kind == "cost":
        return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:.4f}"
    if kind == "pct":
        return f"{value:.1%}"
    if kind == "num":
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if kind == "dur":
        s = int(round(value))
        h, rem = divmod(s, 3600)
        m, sec = divmod(rem, 60)
        return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"
    if kind == "time":
        return str(value)[:16].replace("T", " ")
    return str(value)


def _cells(table: Table) -> tuple[list[str], list[list[str]]]:
    headers = [c[1] for c in table.columns]
    body = [[fmt_value(row.get(c[0]), c[2]) for c in table.columns] for row in table.rows]
    return headers, body


def render_text(report: Report, meta: dict) -> str:
    out = [
        f"{report.name} — {meta['window']}; source: {meta['source']}" + (f"; cost: {meta['cost_basis']}" if meta.get("cost_basis") else "")
    ]
    for table in report.tables:
        headers, body = _cells(table)
        out.append("")
        out.append(table.title)
        if not body:
            out.append("  (nothing in this window)")
            continue
        widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
        right = [c[2] in ("int", "cost", "pct", "dur", "num") for c in table.columns]

        def line(cells: list[str], widths=widths, right=right) -> str:
            return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)).rstrip()

        out.append(line(headers))
        out.append("  ".join("-" * w for w in widths))
        out.extend(line(r) for r in body)
    if report.notes:
        out.append("")
        out.extend(report.notes)
    return "\n".join(out) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report, meta: dict) -> str:
    out = [
        f"**{report.name}** — {meta['window']}; source: {meta['source']}"
        + (f"; cost: {meta['cost_basis']}" if meta.get("cost_basis") else "")
    ]
    for table in report.tables:
        headers, body = _cells(table)
        out += ["", f"### {table.title}", ""]
        if not body:
            out.append("_nothing in this window_")
            continue
        out.append("| " + " | ".join(_md_escape(h) for h in headers) + " |")
        out.append("|" + "|".join("---:" if c[2] in ("int", "cost", "pct", "dur", "num") else "---" for c in table.columns) + "|")
        out.extend("| " + " | ".join(_md_escape(c) for c in r) + " |" for r in body)
    if report.notes:
        out.append("")
        out.extend(f"_{_md_escape(n)}_" for n in report.notes)
    return "\n".join(out) + "\n"


def render_json(report: Report, meta: dict) -> str:
    body = {"report": report.name, **meta, "tables": [{"title": t.title, "rows": t.rows} for t in report.tables], "notes": report.notes}
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n"


# ============================================================================ CLI


COST_BASIS = {
    "local": "estimate from genai-prices' list prices under Langfuse's pricing rules (unknown models unpriced)",
    "langfuse": "computed by Langfuse from its model prices",
}


def build_report(args: argparse.Namespace, facts: list[TurnFact]) -> Report:
    if args.report == "sessions":
        return report_sessions(facts, args.sort, args.limit)
    if args.report == "tools":
        return report_tools(facts, args.limit)
    if args.report == "search":
        return report_search(facts, args.terms)
    if args.report == "prompts":
        return report_prompts(facts, args.terms, args.limit)
    if args.report == "usage":
        return report_usage(facts, args.by)
    if args.report == "friction":
        return report_friction(facts, args.limit)
    if args.report == "problems":
        return report_problems(facts, args.min, args.limit)
    raise InputError(f"unknown report {args.report!r}")


def _dims(text: str) -> tuple:
    dims = tuple(d.strip() for d in text.split(",") if d.strip())
    bad = [d for d in dims if d not in USAGE_DIMS]
    if bad or not dims or len(set(dims)) != len(dims):
        raise argparse.ArgumentTypeError(f"--by {text!r}: a comma-separated subset of {','.join(USAGE_DIMS)}")
    return dims


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return n


def make_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--since", default="7d", help="window start: 7d, 12h, 2w ago or a date 2026-10-01 (default 7d)")
    common.add_argument("--until", help="window end (same forms; default now)")
    common.add_argument("--project", help="only this project (git top-level folder name, as in the trace tags)")
    common.add_argument(
        "--source",
        choices=("local", "langfuse"),
        default="local",
        help="local: read ~/.claude/projects transcripts (no server needed); langfuse: read the Langfuse v4 server",
    )
    fmt = common.add_mutually_exclusive_group()
    fmt.add_argument("--json", dest="format", action="store_const", const="json", help="machine-readable output")
    fmt.add_argument("--markdown", dest="format", action="store_const", const="markdown", help="Markdown tables for pasting")
    parser = argparse.ArgumentParser(
        prog="insights.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    sub = parser.add_subparsers(dest="report", required=True, metavar="REPORT")
    p = sub.add_parser("sessions", parents=[common], help="most complex sessions")
    p.add_argument("--sort", choices=sorted(SESSION_SORTS), default="turns", help="what makes a session complex (default turns)")
    p.add_argument("--limit", type=_positive, default=10, help="rows to show (default 10)")
    p = sub.add_parser("tools", parents=[common], help="tool usage and error rates")
    p.add_argument("--limit", type=_positive, default=50, help="rows to show (default 50)")
    p = sub.add_parser("search", parents=[common], help="turns per session for sessions whose prompts mention each term")
    p.add_argument("terms", nargs="+", metavar="TERM")
    p = sub.add_parser("prompts", parents=[common], help="prompts containing every term, with their session")
    p.add_argument("terms", nargs="+", metavar="TERM")
    p.add_argument("--limit", type=_positive, default=50, help="rows to show, newest last (default 50)")
    p = sub.add_parser("usage", parents=[common], help="tokens and cost by day, model and project")
    p.add_argument("--by", type=_dims, default=USAGE_DIMS, help="grouping, e.g. day or model,project (default day,model,project)")
    p = sub.add_parser("friction", parents=[common], help="permission prompts per tool and project, waiting time, allow rules to add")
    p.add_argument("--limit", type=_positive, default=20, help="rows per table (default 20)")
    p = sub.add_parser("problems", parents=[common], help="retry loops, files read again and again, error streaks, interrupted turns")
    p.add_argument("--min", type=_positive, default=3, help="repeats / errors in a row that count (default 3)")
    p.add_argument("--limit", type=_positive, default=20, help="rows per table (default 20)")
    p = sub.add_parser(
        "scores",
        parents=[common],
        help="per-trace scores (tool_errors, permission_*, interrupted, retry_loop); --push writes them to Langfuse",
    )
    p.add_argument("--push", action="store_true", help="write the scores to Langfuse (fixed ids: pushing again updates them)")
    p.add_argument("--min", type=_positive, default=3, help="same calls in a session that make a retry loop (default 3)")
    return parser


TOOL_IO_REPORTS = ("friction", "problems", "scores")


def load_facts(source: str, window: Window, roots: list[str] | None = None, report: str = "") -> list[TurnFact]:
    if source == "langfuse":
        return langfuse_facts(window, tool_io=report in TOOL_IO_REPORTS)
    return local_facts(window, roots)


def scores_report(args: argparse.Namespace, window: Window, roots: list[str] | None) -> Report:
    """Local source: computed from the transcripts (and pushed with --push). Langfuse source: the scores
    Langfuse holds (with --push: computed from Langfuse's observations, then pushed)."""
    if args.source == "langfuse" and not args.push:
        return report_scores(langfuse_scores(window), "read back from Langfuse (scores this tool pushed)")
    facts = load_facts(args.source, window, roots, "scores")
    rows = trace_scores(facts, args.min)
    if not args.push:
        return report_scores(rows, "computed, not sent: add --push to write them to Langfuse")
    sent = push_scores(rows, load_settings())
    return report_scores(
        rows, f"pushed {sent} score(s) for {len({r['trace_id'] for r in rows})} trace(s) to Langfuse (fixed ids: a rerun updates them)"
    )


def main(argv: list[str] | None = None, roots: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        if any(not t.strip() for t in getattr(args, "terms", None) or []):
            raise InputError("search terms must not be empty")
        window = parse_window(args.since, args.until, args.project)
        if args.report == "scores":
            report = scores_report(args, window, roots)
        else:
            facts = load_facts(args.source, window, roots, args.report)
            report = build_report(args, facts)
    except InputError as e:
        print(f"insights: {e}", file=sys.stderr)
        return 2
    except (SourceError, PushError) as e:
        print(f"insights: {e}", file=sys.stderr)
        return 1
    span = (
        f"{_iso(window.since)[:16].replace('T', ' ') if window.since else 'the beginning'} .. "
        f"{_iso(window.until)[:16].replace('T', ' ') if window.until else 'now'} UTC"
    )
    meta = {
        "source": args.source,
        "window": span + (f", project {window.project}" if window.project else ""),
        "since": _iso(window.since) or None,
        "until": _iso(window.until) or None,
        "project": window.project,
        "cost_basis": COST_BASIS[args.source],
    }
    render = {"json": render_json, "markdown": render_markdown}.get(args.format or "", render_text)
    sys.stdout.write(render(report, meta))
    return 0
