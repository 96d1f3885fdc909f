"""Subagent transcripts in all three layouts Claude Code has used, attached to the Agent/Task call that ran them."""

from __future__ import annotations

import json
import os

from .transcript import Row, read_all_rows
from .turns import AGENT_TOOL_NAMES, ToolCall, Turn, content_text, group_turns, user_row_kind

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
            for path in (
                os.path.join(self.subagents_dir, f"agent-{call.agent_id}.jsonl"),
                os.path.join(self.flat_dir, f"agent-{call.agent_id}.jsonl"),
            ):
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
        pick = next(
            (i for i in starts if i not in taken and content_text((rows[i].data.get("message") or {}).get("content")).strip() == want), None
        )
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
