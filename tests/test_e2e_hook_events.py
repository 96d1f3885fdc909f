"""The hook events beyond Stop, with the real Claude Code CLI 2.1.328 (offline, scripted Messages API).

Every event the installer registers is registered here the same way (PermissionRequest, PostToolUse,
PostToolUseFailure, SubagentStart and SessionStart async), and the traces at the Langfuse stand-in
must show what only those events or the transcript's permission fields tell: a denied tool call and
why, a turn that ended on an API error, closed as ERROR, permissions a user approved in the dialog
(interactive, through a pty) with the wait and the tool's own run time, and a background subagent
that starts when SubagentStart says.
"""

from __future__ import annotations

import sys
import time

import pytest
from claude_code_langfuse import facts
from claude_code_langfuse.files import Paths
from fake_messages_api import FakeMessagesAPI, Script, api_error, reply, tool_use
from fixtures_claude_cli import claude_env, read_jsonl, run_claude, write_hook_settings
from fixtures_pty import DIALOG, READY, Terminal, home_for_interactive
from test_e2e_cli import HOOK, Traced, agent_turn, main_turns, new_standin, obs_id_for, trace_id_for, ts_ms

sys.path.insert(0, str(HOOK.parent.parent / "scripts"))
from settings_merge import ASYNC_EVENTS, HOOK_EVENTS  # noqa: E402

pytestmark = pytest.mark.e2e


def traced_with_every_event(tmp_path, standin) -> Traced:
    t = Traced(tmp_path, standin)
    extra = [e for e in HOOK_EVENTS if e not in ("Stop", "SubagentStop", "SessionEnd")]
    write_hook_settings(
        t.home,
        {e: [{"type": "command", "command": t.command, "timeout": 30, **({"async": True} if e in ASYNC_EVENTS else {})}] for e in extra},
    )
    return t


def test_a_tool_call_denied_by_the_allowed_tools_is_a_warning_with_its_reason(claude_cli, tmp_path):
    standin = new_standin().start()
    try:
        t = traced_with_every_event(tmp_path, standin)
        target = t.project / "notes.txt"
        run = t.run(
            "write notes.txt for me",
            [
                reply(tool_use("Write", {"file_path": str(target), "content": "notes\n"}, id="toolu_denied_write")),
                reply("I could not write it: permission was denied."),
            ],
            allowed_tools="Bash Read",  # Write is not allowed in -p: Claude Code asks, nobody answers, it is denied
            expect_result="I could not write it: permission was denied.",
        )
        assert not target.exists()
        (tv,) = main_turns(run.lines())
        tid = trace_id_for(run.session_id, tv.prompt_id)
        t.wait_delivered(lambda: t.roots_with_output({tid: "I could not write it: permission was denied."}))
        t.wait_worker()
        (tool,) = [o for o in t.standin.traces()[tid] if o.type == "tool"]
        assert tool.name == "Write"
        assert tool.level == "WARNING", (tool.level, tool.metadata)
        assert tool.metadata.get("permission", "").startswith("rejected"), tool.metadata
        t.drain_and_check(clean_log=False)
    finally:
        standin.stop()


def test_a_turn_that_ends_on_an_api_error_is_closed_as_an_error(claude_cli, tmp_path):
    standin = new_standin().start()
    try:
        t = traced_with_every_event(tmp_path, standin)
        t.env["CLAUDE_CODE_MAX_RETRIES"] = "1"
        # no Stop fires for this turn (StopFailure does): not t.run, which checks the Stop hook's summary
        run = run_claude(t.home, t.project, "this one fails", [api_error(529), api_error(529)], env=t.env, check=False)
        turns = main_turns(run.lines())
        assert turns, "the failed prompt is in the transcript"
        tid = trace_id_for(run.session_id, turns[0].prompt_id)

        def closed_as_error() -> bool:
            roots = [o for o in t.standin.traces().get(tid, []) if o.parent_id is None]
            return bool(roots) and roots[-1].level == "ERROR"

        t.wait_delivered(closed_as_error)
        (root,) = [o for o in t.standin.observations() if o.trace_id == tid and o.parent_id is None]
        assert root.metadata.get("ended_by") == "api-error", root.metadata
        print(
            "\nAPI-error turn as Langfuse gets it:", root.level, {k: root.metadata.get(k) for k in ("ended_by", "error_type", "complete")}
        )
    finally:
        standin.stop()


def tool_results_by_id(lines: list[dict]) -> dict[str, dict]:
    """tool_use_id -> the transcript line holding its tool_result (where permissionDecision is)."""
    out = {}
    for row in lines:
        content = (row.get("message") or {}).get("content")
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                out[block["tool_use_id"]] = row
    return out


def test_permissions_approved_in_the_dialog_carry_decision_wait_and_run_time(claude_cli, tmp_path):
    """Interactive (a pty): the user approves one Write once ("1"), the next for the session ("2",
    which switches to accept edits), and a third Write is then allowed by the mode without a dialog.
    Each tool observation at the stand-in carries the decision as the transcript records it, the
    wait from the PermissionRequest fact (minus the tool's run time) and PostToolUse's duration_ms."""
    standin = new_standin().start()
    try:
        t = traced_with_every_event(tmp_path, standin)
        home_for_interactive(t.home, t.project)
        files = {tid: t.project / name for tid, name in (("toolu_once", "a.txt"), ("toolu_session", "b.txt"), ("toolu_mode", "c.txt"))}
        script = Script(
            main=[
                *[reply(tool_use("Write", {"file_path": str(path), "content": tid + "\n"}, id=tid)) for tid, path in files.items()],
                reply("All three written."),
            ]
        )
        with FakeMessagesAPI(script) as api:
            term = Terminal(
                [claude_cli, "--permission-mode", "default"], t.project, claude_env(t.home, api.url, {**t.env, "TERM": "xterm-256color"})
            )
            try:
                term.wait_for(READY)
                time.sleep(1)
                term.say("write the three files")
                term.wait_for(r"a\.txt[\s\S]*" + DIALOG)
                time.sleep(2)  # the user reads the dialog: Claude waits
                term.type("1")  # 1. Yes (this once)
                term.wait_for(r"b\.txt[\s\S]*" + DIALOG)
                time.sleep(2)
                term.type("2")  # 2. Yes, and switch to accept edits (for the session)
                term.wait_for(r"All three")  # the screen is redrawn by differences: whole words only
                time.sleep(1)
                term.exit()
            finally:
                term.close()
            assert api.unused() == {}
        assert all(path.exists() for path in files.values())
        [transcript] = list((t.home / ".claude" / "projects").glob("*/*.jsonl"))
        lines = read_jsonl(transcript)
        session_id = transcript.stem
        (turn,) = main_turns(lines)
        tid = trace_id_for(session_id, turn.prompt_id)
        results = tool_results_by_id(lines)
        ids = {name: obs_id_for(tid, "tool", name) for name in files}

        def settled() -> bool:  # the facts come async: the trace is complete once the last one is merged
            got = t.trace(tid)
            return (
                t.roots_with_output({tid: "All three written."})
                and all(i in got and "duration_ms" in got[i].metadata for i in ids.values())
                and all("permission_requested_at" in got[ids[n]].metadata for n in ("toolu_once", "toolu_session"))
            )

        t.wait_delivered(settled)
        t.wait_worker()
        got = t.trace(tid)
        filed = facts.load(Paths(str(t.state)), session_id)
        requests = filed["permission_requests"]
        assert [r["tool_name"] for r in requests] == ["Write", "Write"], requests  # one per dialog, none for the mode
        lags: dict[str, int] = {}
        for name, scope, label in (("toolu_once", "once", "approved-once"), ("toolu_session", "session", "approved-for-session")):
            tool, meta = got[ids[name]], got[ids[name]].metadata
            decision = results[name]["permissionDecision"]  # as the transcript records it
            assert (decision["decision"], decision["source"], decision["grantScope"]) == ("accept", "user_temporary", scope), decision
            assert tool.level == "DEFAULT" and tool.name == "Write"
            assert meta["permission"] == label and meta["permission_decision"] == "accept"
            assert meta["permission_source"] == "user_temporary" and meta["permission_grant_scope"] == scope
            # the tool's own run time, from its PostToolUse fact
            assert meta["duration_ms"] == filed["tools"][name]["duration_ms"] and filed["tools"][name]["failed"] is False
            # the wait: from the PermissionRequest fact (the dialog appearing) to the result, minus the run time
            asked = meta["permission_requested_at"]
            assert asked in [r["at"] for r in requests], (asked, requests)
            assert ts_ms(lines_tool_use_ts(lines, name)) - 1000 <= ts_ms(asked) <= ts_ms(results[name]["timestamp"])
            expected = ts_ms(results[name]["timestamp"]) - ts_ms(asked) - meta["duration_ms"]
            assert abs(meta["permission_wait_ms"] - expected) <= 1, (meta, expected)
            # the user read the dialog for 2 s; the PermissionRequest fact is the time the hook saw
            # it, a little after the dialog appeared (the hook's start-up): counted from the tool_use line
            lag = ts_ms(asked) - ts_ms(lines_tool_use_ts(lines, name))
            assert meta["permission_wait_ms"] + lag >= 2000, (meta, lag)
            lags[name] = lag
            assert 0 <= meta["duration_ms"] < meta["permission_wait_ms"]
        mode = got[ids["toolu_mode"]].metadata
        assert results["toolu_mode"]["permissionDecision"]["reasonType"] == "mode"
        assert mode["permission"] == "allowed-by-mode" and mode["duration_ms"] == filed["tools"]["toolu_mode"]["duration_ms"]
        assert "permission_requested_at" not in mode and "permission_wait_ms" not in mode  # no dialog, no wait
        print("\nPermissionRequest seen (ms after the tool_use line):", lags)
        print(
            "\napproved in the dialog, as Langfuse gets it:",
            {n: {k: got[i].metadata.get(k) for k in ("permission", "permission_wait_ms", "duration_ms")} for n, i in ids.items()},
        )
        t.drain_and_check()
    finally:
        standin.stop()


def lines_tool_use_ts(lines: list[dict], tool_use_id: str) -> str:
    for row in lines:
        content = (row.get("message") or {}).get("content")
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_use" and block.get("id") == tool_use_id:
                return row["timestamp"]
    raise AssertionError(f"no tool_use {tool_use_id} in the transcript")


def test_a_background_subagent_start_and_its_tools_run_times_from_the_hook_facts(claude_cli, tmp_path):
    """A background agent (`-p`): SubagentStart is filed with the time the hook saw it, the agent
    observation starts at the earlier of that and the agent transcript's first line, and the
    subagent's tool call (PostToolUse with agent_id) and the Agent call carry duration_ms."""
    standin = new_standin().start()
    try:
        t = traced_with_every_event(tmp_path, standin)
        script = Script(
            main=[
                reply(
                    "Delegating.",
                    tool_use(
                        "Agent",
                        {"description": "count files", "prompt": "SUBTASK-FACTS: count the files", "subagent_type": "general-purpose"},
                        id="toolu_agent_facts",
                    ),
                ),
                reply("Launched; waiting."),
                reply("The subagent reported back: 3 files."),
            ],
            agents={
                "SUBTASK-FACTS": [
                    reply(tool_use("Bash", {"command": "echo three", "description": "count"}, id="toolu_sub_facts")),
                    reply("There are 3 files.", delay=0.5),
                ]
            },
        )
        run = t.run("delegate counting to a subagent", script, expect_result="The subagent reported back: 3 files.")
        launch, _notification = main_turns(run.lines())
        launch_id = trace_id_for(run.session_id, launch.prompt_id)
        agent_id = launch.tool_results()["toolu_agent_facts"][0]["toolUseResult"]["agentId"]
        sub = agent_turn(run.transcript.parent / run.session_id / "subagents" / ("agent-%s.jsonl" % agent_id))
        agent_obs, sub_tool, agent_tool = (
            obs_id_for(launch_id, k, n) for k, n in (("agent", agent_id), ("tool", "toolu_sub_facts"), ("tool", "toolu_agent_facts"))
        )

        state = Paths(str(t.state))
        first_line = ts_ms(sub.prompt_row["timestamp"])

        def settled() -> bool:  # the facts come async: wait until the last one is merged
            got, filed = t.trace(launch_id), facts.load(state, run.session_id)
            if agent_id not in filed.get("agents", {}) or agent_obs not in got:
                return False
            return (
                got[agent_obs].output == "There are 3 files."
                and got[agent_obs].start_ms == min(first_line, ts_ms(filed["agents"][agent_id]["start"]))
                and all(i in got and "duration_ms" in got[i].metadata for i in (sub_tool, agent_tool))
            )

        t.wait_delivered(settled)
        t.wait_worker()
        got = t.trace(launch_id)
        filed = facts.load(state, run.session_id)
        started = filed["agents"][agent_id]
        assert started["agent_type"] == "general-purpose"
        # SubagentStart is seen at the launch: after the Agent tool_use line, about when the agent
        # writes its first line (2.1.328: the hook runs 20-70 ms after that line, so the line stands)
        launched, seen = ts_ms(lines_tool_use_ts(run.lines(), "toolu_agent_facts")), ts_ms(started["start"])
        assert launched <= seen <= first_line + 3000, (launched, seen, first_line)
        # the agent observation starts at the earlier of the two: SubagentStart when it came first
        agent = got[agent_obs]
        assert agent.start_ms == min(first_line, seen), (agent.start_ms, first_line, seen)
        assert agent.metadata.get("started_at_launch", False) is (seen <= first_line), agent.metadata
        # the subagent's tool call and the Agent call carry their PostToolUse duration_ms
        assert got[sub_tool].parent_id == agent.id
        assert got[sub_tool].metadata["duration_ms"] == filed["tools"]["toolu_sub_facts"]["duration_ms"]
        assert filed["tools"]["toolu_sub_facts"].get("agent_id") == agent_id
        assert got[agent_tool].metadata["duration_ms"] == filed["tools"]["toolu_agent_facts"]["duration_ms"]
        print(
            "\nsubagent start (ms after the Agent tool_use line): first agent line +%d, SubagentStart seen +%d"
            % (first_line - launched, seen - launched)
        )
        t.drain_and_check()
    finally:
        standin.stop()
