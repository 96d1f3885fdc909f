"""Turns -> queue records: deterministic trace and observation ids, transcript times, usage (docs/design.md, "Queue record")."""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import NamedTuple

from .config import HOOK_VERSION, RECORD_VERSION
from .event import HookEvent
from .turns import Event, Generation, ToolCall, Turn, image_placeholder, parse_ts, prompt_text

# ============================================================================ observations


def trace_id_for(session_id: str, turn_key: str) -> str:
    tid = hashlib.sha256(f"{session_id}:{turn_key}".encode("utf-8", "surrogatepass")).hexdigest()[:32]  # never raises
    return tid if tid.strip("0") else "1" * 32


def observation_id(trace_id: str, kind: str, natural_id: str) -> str:
    oid = hashlib.sha256(f"{trace_id}:{kind}:{natural_id}".encode("utf-8", "surrogatepass")).hexdigest()[:16]
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


THINKING_SUMMARIES_ADVICE = (
    'set "showThinkingSummaries": true in ~/.claude/settings.json (or a project\'s .claude/settings.json), '
    "or pass --thinking-display summarized to claude -p"
)
THINKING_OMITTED_NOTE = (
    'Claude Code recorded no thinking text: it asks the API for thinking with display "omitted" '
    "unless thinking summaries are on. To trace them, " + THINKING_SUMMARIES_ADVICE + "."
)


def thinking_omitted(b: dict) -> bool:
    """A thinking block whose text Claude Code did not record (a signature and an empty string)."""
    return b.get("type") == "thinking" and not (isinstance(b.get("thinking"), str) and b["thinking"].strip())


def block_for_output(b: dict) -> dict:
    t = b.get("type")
    if t == "text":
        return {"type": "text", "text": b.get("text", "")}
    if thinking_omitted(b):
        return {"type": "thinking", "omitted": True, "note": THINKING_OMITTED_NOTE}
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


def model_parameters(gen: Generation) -> dict | None:
    """How one API call was made, as Langfuse's `model_parameters` (its price tiers select on them,
    e.g. Claude's fast mode on speed == "fast"): the billed speed and service tier of the response's
    usage, and the request's effort, max_tokens and thinking settings from its `api-request` line."""
    usage, req, line = gen.usage or {}, gen.request or {}, gen.line_meta or {}
    out: dict = {}
    speed = usage.get("speed") or req.get("speed")  # the response says what was billed (a fast request can fall back)
    if isinstance(speed, str) and speed:
        out["speed"] = speed
    tier = usage.get("service_tier") or req.get("service_tier")
    if isinstance(tier, str) and tier:
        out["service_tier"] = tier
    config = req.get("output_config") if isinstance(req.get("output_config"), dict) else {}
    effort = config.get("effort") or line.get("effort")
    if isinstance(effort, str) and effort:
        out["effort"] = effort
    if isinstance(req.get("max_tokens"), int) and not isinstance(req.get("max_tokens"), bool):
        out["max_tokens"] = req["max_tokens"]
    thinking = req.get("thinking") if isinstance(req.get("thinking"), dict) else {}
    if isinstance(thinking.get("type"), str):
        out["thinking"] = thinking["type"]  # adaptive, enabled, disabled
    if isinstance(thinking.get("budget_tokens"), int) and not isinstance(thinking.get("budget_tokens"), bool):
        out["thinking_budget_tokens"] = thinking["budget_tokens"]
    display = thinking.get("display") or line.get("thinkingDisplay")
    if isinstance(display, str) and display:
        out["thinking_display"] = display
    for key in ("temperature", "top_p", "top_k"):
        if isinstance(req.get(key), (int, float)) and not isinstance(req.get(key), bool):
            out[key] = req[key]
    geo = usage.get("inference_geo")
    if isinstance(geo, str) and geo:
        out["inference_geo"] = geo
    return out or None


def thinking_counts(turn: Turn) -> tuple[int, int]:
    """(thinking blocks without text, thinking blocks with text) of a turn and its subagent runs."""
    omitted = shown = 0
    for item in turn.items:
        if isinstance(item, Generation) and not item.synthetic:
            for b in item.blocks:
                if b.get("type") == "thinking":
                    if thinking_omitted(b):
                        omitted += 1
                    else:
                        shown += 1
        elif isinstance(item, ToolCall) and item.agent is not None:
            o, s = thinking_counts(item.agent)
            omitted, shown = omitted + o, shown + s
    return omitted, shown


class TraceContext(NamedTuple):
    session_id: str
    user_id: str
    project: str
    turn_number: int
    trace_id: str
    forked_from: str = ""  # the session a forked session's history was copied from


def turn_observations(turn: Turn, trace_id: str, parent_id: str, turn_end: str) -> list[dict]:
    """Children of a turn (or of a subagent run): generations, tools, agents, events."""
    obs: list[dict] = []
    for item in turn.items:
        if isinstance(item, Generation):
            if item.synthetic:
                obs.append(
                    _obs(
                        observation_id(trace_id, "event", item.message_id),
                        parent_id,
                        "event",
                        "api-error" if item.api_error else "synthetic-message",
                        item.first_ts or item.end,
                        item.first_ts or item.end,
                        output=item.text,
                        level=("ERROR" if item is ended_on_api_error(turn) else "WARNING") if item.api_error else "DEFAULT",
                        metadata={"message_id": item.message_id},
                    )
                )
                continue
            meta = {"message_id": item.message_id, "request_id": item.request_id, "stop_reason": item.stop_reason}
            params = model_parameters(item)
            for k in ("service_tier", "speed", "effort"):  # also in metadata, for filtering
                if params and params.get(k):
                    meta[k] = params[k]
            thinking = (
                (item.usage.get("output_tokens_details") or {}).get("thinking_tokens")
                if isinstance(item.usage.get("output_tokens_details"), dict)
                else None
            )
            if thinking:
                meta["thinking_tokens"] = thinking
            obs.append(
                _obs(
                    observation_id(trace_id, "gen", item.message_id),
                    parent_id,
                    "generation",
                    item.model or "claude",
                    item.start or item.first_ts,
                    item.end,
                    # what was added to the conversation since the previous call: prompt, tool results, feedback
                    input=item.input or None,
                    output={"role": "assistant", "content": [block_for_output(b) for b in item.blocks]},
                    metadata=meta,
                    model=item.model,
                    usage=usage_details(item.usage),
                    completion_start=item.first_ts,
                    model_parameters=params,
                )
            )
        elif isinstance(item, ToolCall):
            tool_id = observation_id(trace_id, "tool", item.id)
            meta: dict = {"tool_use_id": item.id}
            if isinstance(item.result_meta, dict):
                meta.update(
                    {
                        f"result.{k}": v
                        for k, v in item.result_meta.items()
                        if isinstance(v, (int, float, bool)) or (isinstance(v, str) and len(v) <= 200)
                    }
                )
            meta.update(tool_facts(item))
            level, status = "DEFAULT", None
            if item.is_error:
                level, status = "ERROR", item.output if isinstance(item.output, str) else json.dumps(item.output, ensure_ascii=False)
                if meta.get("permission") in ("rejected-by-config", "rejected-by-user"):
                    # not a failure of the tool: the call was not allowed to run (a hook's block stays an error)
                    level, status = "WARNING", f"permission {meta['permission'].replace('-', ' ')}: {status}"
            elif not item.has_result:
                level, status = "WARNING", "no tool result in the transcript (interrupted or still running)"
            end = item.end or turn_end or item.start
            obs.append(
                _obs(
                    tool_id,
                    parent_id,
                    "tool",
                    item.name,
                    item.start,
                    end,
                    input=item.input,
                    output=item.output,
                    metadata=meta,
                    level=level,
                    status=status,
                )
            )
            if item.agent is not None:
                obs.extend(agent_observations(item, trace_id, tool_id))
        elif isinstance(item, Event):
            at, meta = item.ts, item.metadata
            if turn_end and at > turn_end:
                # typed after the answer (/exit, /cost, /model): shown at the turn's end, its own time
                # in metadata, so it never stretches the trace's latency (Langfuse spans all observations)
                at, meta = turn_end, {**(meta if isinstance(meta, dict) else {}), "at": item.ts}
            obs.append(
                _obs(
                    observation_id(trace_id, "event", item.uid),
                    parent_id,
                    "event",
                    item.name,
                    at,
                    at,
                    input=item.input,
                    level=item.level,
                    metadata=meta,
                )
            )
    return obs


def permission_label(permission: dict) -> str:
    """allowed-by-rule / allowed-by-mode / allowed-by-config / approved-once / approved-for-session /
    approved / rejected-by-config / rejected-by-user / rejected, from what the result line records."""
    decision = permission.get("permissionDecision")
    decision = decision if isinstance(decision, dict) else {}
    verdict, source = str(decision.get("decision") or ""), str(decision.get("source") or "")
    if verdict == "accept":
        if source.startswith("user"):
            scope = str(decision.get("grantScope") or "")
            return {"once": "approved-once", "session": "approved-for-session"}.get(scope, "approved" + (f"-{scope}" if scope else ""))
        reason = str(decision.get("reasonType") or "")
        return f"allowed-by-{reason}" if reason in ("rule", "mode", "hook", "classifier") else "allowed-by-config"
    if verdict == "reject" or permission.get("toolDenialKind"):
        if source == "config":
            return "rejected-by-config"
        if source.startswith("user") or permission.get("toolDenialKind") == "user-rejected":
            return "rejected-by-user"
        return "rejected"
    return ""


def tool_facts(call: ToolCall) -> dict:
    """Permission decision, the wait for it and the tool's own run time, as observation metadata."""
    meta: dict = {}
    permission = call.permission or {}
    label = permission_label(permission)
    if label:
        meta["permission"] = label
    decision = permission.get("permissionDecision")
    if isinstance(decision, dict):
        for key, name in (("decision", "decision"), ("source", "source"), ("grantScope", "grant_scope"), ("reasonType", "reason_type")):
            if isinstance(decision.get(key), str) and decision[key]:
                meta[f"permission_{name}"] = decision[key]
        if isinstance(decision.get("ruleSource"), str):
            meta["permission_rule_source"] = decision["ruleSource"]
    if isinstance(permission.get("toolDenialKind"), str):
        meta["tool_denial_kind"] = permission["toolDenialKind"]
    facts = call.hook_facts or {}
    duration = facts.get("duration_ms")
    if isinstance(duration, (int, float)) and not isinstance(duration, bool):
        meta["duration_ms"] = duration  # the tool's own run time (PostToolUse), without any wait for the user
    if facts.get("is_interrupt"):
        meta["is_interrupt"] = True
    # how long Claude waited for the decision: from the PermissionRequest to the result (or, when
    # the user decided and no request was seen, from the tool_use line), minus the tool's run time
    waited_from = call.permission_request_at
    if call.permission_request_at:
        meta["permission_requested_at"] = call.permission_request_at
    elif label.startswith(("approved", "rejected-by-user")):
        waited_from = call.start
    if waited_from and call.end:
        t0, t1 = parse_ts(waited_from), parse_ts(call.end)
        if t0 and t1:
            ms = (t1 - t0).total_seconds() * 1000 - (duration if isinstance(duration, (int, float)) else 0)
            meta["permission_wait_ms"] = max(0, round(ms))
    return meta


def turn_ending(turn: Turn) -> tuple[str, str, str | None, dict]:
    """How a turn ended when not with an answer: (ended_by, level, status, metadata) from the
    transcript, with the StopFailure's error type when that hook event was seen."""
    error_gen = ended_on_api_error(turn)
    if error_gen is not None:
        failure = turn.stop_failure or {}
        kind = failure.get("error") or "api_error"
        meta = {"ended_by": "api-error", "error_type": kind}
        if failure.get("error_details"):
            meta["error_details"] = failure["error_details"]
        return "api-error", "ERROR", f"API error ({kind}): {error_gen.text or failure.get('last_assistant_message') or ''}".strip(), meta
    if turn.interrupted:
        rejected = [c.name for c in turn.tools.values() if permission_label(c.permission) == "rejected-by-user"]
        if rejected:
            return (
                "rejected",
                "WARNING",
                f"tool use rejected by the user ({', '.join(rejected)}); the turn was interrupted",
                {"ended_by": "rejected"},
            )
        return "interrupted", "WARNING", "interrupted by the user", {"ended_by": "interrupted"}
    return "", "DEFAULT", None, {}


def ended_on_api_error(turn: Turn) -> Generation | None:
    """The synthetic API-error message a turn ended on (no answer or tool call after it)."""
    for item in reversed(turn.items):
        if isinstance(item, Generation):
            return item if item.api_error else None
        if isinstance(item, ToolCall):
            return None
    return None


def agent_observations(call: ToolCall, trace_id: str, parent_id: str) -> list[dict]:
    agent = call.agent
    natural = call.agent_run or call.agent_id or call.id
    agent_obs_id = observation_id(trace_id, "agent", natural)
    meta = {"agent_id": call.agent_id, **{k: v for k, v in call.agent_meta.items() if isinstance(v, (str, int, float, bool))}}
    description = call.agent_meta.get("description") or (call.input or {}).get("description") if isinstance(call.input, dict) else None
    agent_type = call.agent_meta.get("agentType") or ((call.input or {}).get("subagent_type") if isinstance(call.input, dict) else None)
    name = "Subagent: " + str(description or agent_type or natural)
    end = agent.end or agent.start
    meta["complete"] = agent.looks_complete()
    start = agent.start
    if call.agent_started and (not start or call.agent_started <= start):
        start = call.agent_started  # SubagentStart: the launch, before the agent wrote its first line
        meta["started_at_launch"] = True
    out = [
        _obs(
            agent_obs_id,
            parent_id,
            "agent",
            name,
            start,
            end,
            input=prompt_text(agent.prompt),
            output=agent.final_text,
            metadata=meta,
        )
    ]
    out.extend(turn_observations(agent, trace_id, agent_obs_id, end))
    return out


def _obs(
    oid,
    parent,
    typ,
    name,
    start,
    end,
    *,
    input=None,
    output=None,
    metadata=None,
    level="DEFAULT",
    status=None,
    model=None,
    usage=None,
    completion_start=None,
    model_parameters=None,
) -> dict:
    start = start or end
    end = end or start
    if end and start and end < start:
        end = start
    return {
        "id": oid,
        "parent_id": parent,
        "type": typ,
        "name": name,
        "start": start,
        "end": end,
        "input": input,
        "output": output,
        "metadata": metadata or {},
        "level": level,
        "status_message": status,
        "model": model,
        "usage_details": usage,
        "completion_start_time": completion_start if typ == "generation" else None,
        "model_parameters": model_parameters if typ == "generation" else None,
    }


def turn_output(turn: Turn) -> str:
    if turn.final_text:
        return turn.final_text
    # a turn that ended in an API error: show the error text Claude Code showed the user
    return next((g.text for g in reversed(turn.items) if isinstance(g, Generation) and g.synthetic and g.text), "")


def turn_settles_later(turn: Turn, event) -> bool:
    """Will this Stop's turn still change on disk in a moment? Its final answer is not there yet,
    or Claude Code has not written what it writes after the Stop hooks: the hooks' summary and, in
    an interactive session, the turn's duration. The worker waits (bounded) so that the turn is
    queued once, final, instead of once now and again for those lines."""
    if event is not None and event.name == "StopFailure" and not turn.finished:
        return ended_on_api_error(turn) is None  # the error message Claude Code writes is not on disk yet
    if event is None or event.name != "Stop" or turn.finished:
        return False
    if answer_lags(turn, event) or turn.awaiting_stop_summary:
        return True
    interactive = (turn.meta_row.get("entrypoint") or "") == "cli"
    return interactive  # -p sessions write no turn_duration; interactive ones do, right after the summary


def answer_lags(turn: Turn, event) -> bool:
    """Did a Stop event see a final answer that is not (yet) on disk for this turn?"""
    if event is None or event.name != "Stop" or not event.last_assistant_message or turn.finished:
        return False
    return event.last_assistant_message.strip() != turn_output(turn).strip()


def turn_record(turn: Turn, ctx: TraceContext, event: HookEvent | None = None) -> dict:
    """A turn as one self-contained queue record (docs/design.md, "Queue record")."""
    trace_id = ctx.trace_id
    root_id = observation_id(trace_id, "root", turn.key)
    prompt = prompt_text(turn.prompt)
    if turn.command_expansion:
        prompt = prompt + "\n\n" + turn.command_expansion
    for _uid, queued in turn.queued_prompts:  # typed while Claude was working: part of what was asked
        prompt = prompt + "\n\n[sent while Claude was working]\n" + queued
    output = turn_output(turn)
    complete = turn.looks_complete()
    meta_extra: dict = {}
    if answer_lags(turn, event):
        # Stop ran before Claude Code flushed the final answer: use what the event says
        output, complete = event.last_assistant_message, False
        meta_extra["output_source"] = "last_assistant_message"
    row = turn.meta_row
    end = turn.end or turn.start
    trace_meta = {
        "project": ctx.project,
        "cwd": row.get("cwd") or "",
        "git_branch": row.get("gitBranch") or "",
        "claude_code_version": row.get("version") or "",
        "permission_mode": row.get("permissionMode") or (event.permission_mode if event else ""),
        "entrypoint": row.get("entrypoint") or "",
        "prompt_id": row.get("promptId") or "",
        "turn_number": ctx.turn_number,
        "turn_kind": turn.kind,
    }
    if ctx.forked_from:
        trace_meta["forked_from"] = ctx.forked_from
    if turn.session_start.get("source"):
        trace_meta["session_source"] = turn.session_start["source"]  # SessionStart: startup / resume / clear / compact / fork
    ended_by, level, status, ending_meta = turn_ending(turn)
    if ended_by:
        complete = True  # over: nothing more comes for this turn
    root_meta = {
        **trace_meta,
        "complete": complete,
        "interrupted": turn.interrupted,
        "hook_version": HOOK_VERSION,
        **meta_extra,
        **ending_meta,
    }
    if turn.hook_durations_ms:
        root_meta["stop_hook_durations_ms"] = turn.hook_durations_ms
    if turn.duration_ms is not None:
        root_meta["turn_duration_ms"] = turn.duration_ms  # Claude Code's own measure of the turn
    root = _obs(
        root_id,
        None,
        "span",
        turn_title(turn),
        turn.start,
        end,
        input=prompt,
        output=output,
        metadata=root_meta,
        level=level,
        status=status,
    )
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
        "trace": {
            "id": trace_id,
            "name": turn_title(turn),
            "session_id": ctx.session_id,
            "user_id": ctx.user_id,
            "tags": tags,
            "release": row.get("version") or "",  # the Claude Code version of the turn
            "metadata": {k: v for k, v in trace_meta.items() if v not in ("", None)},
        },
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


# ============================================================================ per-event trace settings


_PR_REF_RE = re.compile(r"^refs/pull/(\d+)/")


def _url_without_credentials(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return scheme + sep + host.rpartition("@")[2] + slash + path if sep else url


def ci_metadata(ci: dict | None) -> dict:
    """The CI facts the hook captured (inbox.CI_NAMES) -> flat trace metadata: provider, repository,
    workflow, run id and URL, commit sha, PR/MR number. Empty outside CI."""
    if not ci:
        return {}
    out: dict = {}
    if (ci.get("GITHUB_ACTIONS") or "").lower() == "true":
        server = _url_without_credentials((ci.get("GITHUB_SERVER_URL") or "https://github.com").rstrip("/"))
        repo, run = ci.get("GITHUB_REPOSITORY") or "", ci.get("GITHUB_RUN_ID") or ""
        pr = _PR_REF_RE.match(ci.get("GITHUB_REF") or "")
        out = {
            "ci": "github-actions",
            "ci_repository": repo,
            "ci_workflow": ci.get("GITHUB_WORKFLOW"),
            "ci_run_id": run,
            "ci_run_attempt": ci.get("GITHUB_RUN_ATTEMPT"),
            "ci_run_url": f"{server}/{repo}/actions/runs/{run}" if repo and run else "",
            "ci_commit": ci.get("GITHUB_SHA"),
            "ci_event": ci.get("GITHUB_EVENT_NAME"),
            "ci_pr": pr.group(1) if pr else "",
        }
    elif (ci.get("GITLAB_CI") or "").lower() == "true":
        out = {
            "ci": "gitlab-ci",
            "ci_repository": ci.get("CI_PROJECT_PATH"),
            "ci_run_id": ci.get("CI_PIPELINE_ID"),
            "ci_run_url": _url_without_credentials(ci.get("CI_PIPELINE_URL") or ""),
            "ci_job_id": ci.get("CI_JOB_ID"),
            "ci_job_url": _url_without_credentials(ci.get("CI_JOB_URL") or ""),
            "ci_commit": ci.get("CI_COMMIT_SHA"),
            "ci_pr": ci.get("CI_MERGE_REQUEST_IID"),
        }
    elif (ci.get("CI") or "").strip().lower() in ("true", "1", "yes"):
        out = {"ci": "ci"}
    return {k: v[:200] for k, v in out.items() if isinstance(v, str) and v}


_HOSTNAME: list = []


def host_name() -> str:
    if not _HOSTNAME:
        import socket

        try:
            _HOSTNAME.append(socket.gethostname())
        except OSError:
            _HOSTNAME.append("")
    return _HOSTNAME[0]


def apply_trace_settings(record: dict, settings) -> dict:
    """The settings of the event that queues the record (per project: `.claude/settings.local.json`
    env reaches the hook, which hands it over in the news file): extra tags, the Langfuse
    environment, host name (unless CC_LANGFUSE_HOSTNAME=false) and CI facts in trace metadata."""
    trace = record["trace"]
    extra = [t for t in (getattr(settings, "tags", None) or ()) if t not in trace["tags"]]
    if extra:
        trace["tags"] = list(trace["tags"]) + extra
    if getattr(settings, "environment", ""):
        trace["environment"] = settings.environment
    meta = dict(trace.get("metadata") or {})
    if getattr(settings, "hostname", True):
        host = host_name()
        if host:
            meta["host"] = host
    meta.update(ci_metadata(getattr(settings, "ci", None)))
    trace["metadata"] = meta
    return record
