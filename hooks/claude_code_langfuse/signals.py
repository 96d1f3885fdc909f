"""What went wrong or slowed a session down, from the plain rows insights reads (no I/O here).

Permission outcomes come from what the transcript records on a tool result (Claude Code 2.1.x):
`permissionDecision` {decision accept|reject, source user_temporary|user_permanent|config, grantScope,
reasonType}, `toolDenialKind` ("user-rejected") and, for an interactive rejection (Esc or "No"),
no permissionDecision but the text "The user doesn't want to proceed with this tool use".

    approved   the user said yes in the dialog                       (a prompt)
    rejected   the user said no / pressed Esc                        (a prompt)
    unasked    needed permission, nobody could be asked (`-p`)        (a prompt, denied)
    denied     a deny rule refused it                                (no prompt)
    allowed    an allow rule or the permission mode let it run        (no prompt)

The time Claude waited for the user is the tool call's span (tool_use line -> tool_result line)
minus the tool's own run time where it is known (PostToolUse `duration_ms`).

Everything here works on duck-typed rows: a turn has session_id, project, trace_id, start, tools,
generations, interrupted, cwd; a tool has name, id, input, start, end, is_error, error,
permission (dict), duration_ms.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from collections.abc import Iterable
from typing import Any

from .turns import parse_ts

PROMPT_OUTCOMES = ("approved", "rejected", "unasked")
DENIAL_OUTCOMES = ("rejected", "unasked", "denied")
REJECTED_TEXT = "The user doesn't want to proceed"
EDIT_TOOLS = ("Edit", "Write", "MultiEdit", "NotebookEdit")
READ_TOOLS = ("Read",)
# commands whose second word says what they do (`npm test`, `git status`): rules keep two words
TWO_WORD = frozenset(
    "npm npx yarn pnpm bun deno git cargo go uv pip pip3 poetry make docker kubectl helm dotnet mvn gradle "
    "terraform gh brew apt apt-get systemctl rake bundle mix composer swift flutter".split()
)


def permission_outcome(tool: Any) -> str:
    """One of approved / rejected / unasked / denied / allowed, or "" when nothing was decided."""
    p = tool.permission or {}
    decision = str(p.get("decision") or "")
    source = str(p.get("source") or "")
    if decision == "accept":
        return "approved" if source.startswith("user") else "allowed"
    if decision == "reject":
        if source.startswith("user"):
            return "rejected"
        return "denied" if p.get("reason_type") == "rule" or p.get("reasonType") == "rule" else "unasked"
    if p.get("denial_kind") == "user-rejected":
        return "rejected"
    if p.get("denial_kind"):
        return "denied"  # refused by a rule or a PreToolUse hook, nobody was asked
    if tool.is_error and (tool.error or "").startswith(REJECTED_TEXT):
        return "rejected"
    return ""


def wait_seconds(tool: Any) -> float:
    """How long the call waited for the user's answer (0 unless the user was asked)."""
    if permission_outcome(tool) not in ("approved", "rejected"):
        return 0.0
    if isinstance(getattr(tool, "wait_ms", None), (int, float)):
        return max(0.0, tool.wait_ms / 1000.0)  # measured by the hook (from the PermissionRequest)
    a, b = parse_ts(tool.start), parse_ts(tool.end)
    if not a or not b:
        return 0.0
    span = (b - a).total_seconds()
    if isinstance(tool.duration_ms, (int, float)) and tool.duration_ms >= 0:
        span -= tool.duration_ms / 1000.0
    return max(0.0, span)


def is_failure(tool: Any) -> bool:
    """A tool error that is not a permission refusal."""
    return bool(tool.is_error) and permission_outcome(tool) not in DENIAL_OUTCOMES


# ============================================================================ allow rules


def _rel_dir(path: str, cwd: str) -> str:
    folder = os.path.dirname(path) if path else ""
    if cwd and folder and (folder == cwd or folder.startswith(cwd.rstrip("/") + "/")):
        rel = os.path.relpath(folder, cwd)
        return "" if rel == "." else rel
    return "/" + folder if folder.startswith("/") else folder  # `//abs` = absolute in Claude Code rules (`/x` = from the settings file)


def _bash_prefixes(command: str) -> list[str]:
    """The rule prefix of each simple command of a Bash command line (`npm test`, `ls`)."""
    out = []
    text = command.replace("&&", ";").replace("||", ";").replace("|", ";").replace("\n", ";")
    for part in text.split(";"):
        try:
            words = shlex.split(part, posix=True)
        except ValueError:
            words = part.split()
        while words and "=" in words[0] and not words[0].startswith("="):
            words = words[1:]  # FOO=bar cmd
        if not words:
            continue
        first = os.path.basename(words[0]) if words[0].startswith(("/", "./")) else words[0]
        if first in TWO_WORD and len(words) > 1 and not words[1].startswith("-"):
            out.append(f"{first} {words[1]}")
        else:
            out.append(first)
    return out


def suggest_rules(tool: Any, cwd: str = "") -> list[str]:
    """The allow rule(s) in Claude Code's syntax that would have let this call run without a prompt."""
    name, inp = tool.name, tool.input if isinstance(tool.input, dict) else {}
    if name == "Bash" and isinstance(inp.get("command"), str):
        return [f"Bash({p}:*)" for p in dict.fromkeys(_bash_prefixes(inp["command"]))] or ["Bash"]
    path = inp.get("file_path") or inp.get("notebook_path") or inp.get("path")
    if name in EDIT_TOOLS and isinstance(path, str):
        rel = _rel_dir(path, cwd)
        return [f"Edit({rel}/**)" if rel else "Edit(./*)"]
    if name in ("Read", "Glob", "Grep") and isinstance(path, str):
        rel = _rel_dir(path, cwd) if name == "Read" else _rel_dir(path.rstrip("/") + "/x", cwd)
        return [f"Read({rel}/**)" if rel else "Read(./*)"]
    if name == "WebFetch" and isinstance(inp.get("url"), str):
        from urllib.parse import urlsplit

        host = urlsplit(inp["url"]).hostname
        return [f"WebFetch(domain:{host})"] if host else ["WebFetch"]
    return [name]


# ============================================================================ per session analysis


def ordered_tools(turns: Iterable[Any]) -> list[tuple[Any, Any]]:
    """(turn, tool) of a session in call order."""
    pairs = [(t, tool) for t in turns for tool in t.tools]
    pairs.sort(key=lambda p: (p[1].start or p[0].start, p[0].start))
    return pairs


def issuing_generation(turn: Any, tool: Any) -> Any:
    """The model call that asked for this tool call: the last one of the turn that started before it."""
    best = None
    for g in turn.generations:
        if g.start and tool.start and g.start <= tool.start and (best is None or g.start >= best.start):
            best = g
    return best


def input_key(tool: Any) -> str:
    try:
        return tool.name + "\x00" + json.dumps(tool.input, sort_keys=True, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return tool.name + "\x00" + repr(tool.input)


def retry_loops(pairs: list[tuple[Any, Any]], minimum: int = 3) -> list[list[tuple[Any, Any]]]:
    """Groups of calls of one session with the same tool and the same input, `minimum` or more."""
    groups: dict[str, list] = {}
    for turn, tool in pairs:
        if tool.input in (None, "", {}):
            continue
        groups.setdefault(input_key(tool), []).append((turn, tool))
    return [g for g in groups.values() if len(g) >= minimum]


def read_path(tool: Any) -> str:
    inp = tool.input if isinstance(tool.input, dict) else {}
    path = inp.get("file_path") or inp.get("notebook_path")
    return path if isinstance(path, str) else ""


def repeated_reads(pairs: list[tuple[Any, Any]], minimum: int = 3) -> list[tuple[str, list, int]]:
    """(file, the Read calls, edits of the file between the first and last read) for files read `minimum`+ times."""
    reads: dict[str, list] = {}
    for turn, tool in pairs:
        if tool.name in READ_TOOLS and read_path(tool):
            reads.setdefault(read_path(tool), []).append((turn, tool))
    out = []
    for path, calls in reads.items():
        if len(calls) < minimum:
            continue
        first, last = calls[0][1].start, calls[-1][1].start
        edits = sum(1 for _, t in pairs if t.name in EDIT_TOOLS and read_path(t) == path and first <= (t.start or "") <= last)
        out.append((path, calls, edits))
    return out


def error_streaks(pairs: list[tuple[Any, Any]], minimum: int = 3) -> list[list[tuple[Any, Any]]]:
    """Runs of `minimum`+ consecutive failing calls in a session (permission refusals neither count nor break a run)."""
    out, run = [], []
    for turn, tool in pairs:
        if permission_outcome(tool) in DENIAL_OUTCOMES:
            continue
        if is_failure(tool):
            run.append((turn, tool))
            continue
        if len(run) >= minimum:
            out.append(run)
        run = []
    if len(run) >= minimum:
        out.append(run)
    return out


def spent(pairs: Iterable[tuple[Any, Any]], total_tokens: Any) -> tuple[int, float | None, int]:
    """(tokens, cost, model calls) of the model calls that issued these tool calls, each call counted once."""
    seen: dict[int, Any] = {}
    for turn, tool in pairs:
        g = issuing_generation(turn, tool)
        if g is not None:
            seen[id(g)] = g
    tokens = sum(total_tokens(g.usage_details) for g in seen.values())
    costs = [g.cost for g in seen.values() if g.cost is not None]
    return tokens, (sum(costs) if costs else None), len(seen)


# ============================================================================ scores

SCORE_NAMES = (
    "tool_errors",
    "permission_prompts",
    "permission_denials",
    "permission_wait_s",
    "interrupted",
    "retry_loop",
)
BOOLEAN_SCORES = ("interrupted", "retry_loop")


def score_id(trace_id: str, name: str) -> str:
    """Deterministic: pushing again updates the same score (Langfuse upserts by id)."""
    return hashlib.sha256(f"{trace_id}:score:{name}".encode()).hexdigest()[:32]


def trace_scores(turns: list[Any], minimum: int = 3) -> list[dict]:
    """One score row per (trace, name) for every turn given (sessions analysed whole)."""
    sessions: dict[str, list] = {}
    for t in turns:
        sessions.setdefault(t.session_id, []).append(t)
    rows = []
    for session_turns in sessions.values():
        pairs = ordered_tools(session_turns)
        looping = {id(tool) for group in retry_loops(pairs, minimum) for _, tool in group}
        for t in session_turns:
            outcomes = [permission_outcome(tool) for tool in t.tools]
            values = {
                "tool_errors": sum(is_failure(tool) for tool in t.tools),
                "permission_prompts": sum(o in PROMPT_OUTCOMES for o in outcomes),
                "permission_denials": sum(o in DENIAL_OUTCOMES for o in outcomes),
                "permission_wait_s": round(sum(wait_seconds(tool) for tool in t.tools), 3),
                "interrupted": int(bool(t.interrupted)),
                "retry_loop": int(any(id(tool) in looping for tool in t.tools)),
            }
            for name in SCORE_NAMES:
                rows.append(
                    {
                        "id": score_id(t.trace_id, name),
                        "trace_id": t.trace_id,
                        "session_id": t.session_id,
                        "project": t.project,
                        "start": t.start,
                        "name": name,
                        "value": values[name],
                        "data_type": "BOOLEAN" if name in BOOLEAN_SCORES else "NUMERIC",
                    }
                )
    return rows
