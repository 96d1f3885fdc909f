"""The hook events beyond Stop, with the real Claude Code CLI 2.1.328 (offline, scripted Messages API).

Every event the installer registers is registered here the same way (PermissionRequest, PostToolUse,
PostToolUseFailure, SubagentStart and SessionStart async), and the traces at the Langfuse stand-in
must show what only those events or the transcript's permission fields tell: a denied tool call and
why, and a turn that ended on an API error, closed as ERROR.
"""

from __future__ import annotations

import sys

import pytest
from fake_messages_api import api_error, reply, tool_use
from fixtures_claude_cli import run_claude, write_hook_settings
from test_e2e_cli import HOOK, Traced, main_turns, new_standin, trace_id_for

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
