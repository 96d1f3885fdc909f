"""insights friction / problems on an interactive Claude Code 2.1.328 session driven through a
pseudo-terminal (offline, scripted Messages API): one permission dialog approved ("1"), one rejected
(Esc). `-p` cannot show a dialog, so this is the only way to get a real approval and a real rejection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_messages_api import FakeMessagesAPI, Script, reply, tool_use
from fixtures_claude_cli import claude_env, hook_command, write_hook_settings
from fixtures_pty import DIALOG, READY, Terminal, home_for_interactive

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parent.parent


def test_an_approval_and_a_rejection_in_the_dialog(claude_cli, tmp_path):
    home, project = tmp_path / "home", tmp_path / "iproj"
    project.mkdir()
    home_for_interactive(home, project)
    state = home / ".claude" / "state"
    write_hook_settings(
        home, {e: [hook_command(sys.executable, "-I", REPO / "hooks" / "langfuse_hook.py")] for e in ("Stop", "SessionEnd")}
    )
    script = Script(
        main=[
            reply(tool_use("Write", {"file_path": str(project / "f.txt"), "content": "hi"}, id="toolu_iw")),
            reply("Written."),
            reply(tool_use("Bash", {"command": "touch y.txt", "description": "touch"}, id="toolu_ib")),
        ]
    )
    with FakeMessagesAPI(script) as api:
        env = claude_env(home, api.url, {"CC_LANGFUSE_STATE_DIR": str(state), "TERM": "xterm-256color"})
        term = Terminal([claude_cli, "--permission-mode", "default"], project, env)
        try:
            term.wait_for(READY)
            time.sleep(1)
            term.say("write f.txt please")
            term.wait_for(DIALOG)
            time.sleep(2)  # the user thinks: Claude waits
            term.type("1")  # 1. Yes
            term.wait_for(r"Written")
            time.sleep(1)
            term.say("now touch y.txt")
            term.wait_for(DIALOG)
            time.sleep(1)
            term.type("\x1b")  # Esc: rejected
            time.sleep(2)
            term.exit()
        finally:
            term.close()
        assert api.unused() == {}
    env = {k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ}
    env.update(HOME=str(home), CC_LANGFUSE_CONFIG=str(tmp_path / "none.json"))

    def insights(*args: str) -> dict:
        proc = subprocess.run(
            [sys.executable, "-I", str(REPO / "hooks" / "insights.py"), *args, "--since", "1h", "--json"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    by_tool = {r["tool"]: r for r in insights("friction")["tables"][0]["rows"]}
    assert (by_tool["Write"]["prompts"], by_tool["Write"]["approved"]) == (1, 1), by_tool
    assert (by_tool["Bash"]["prompts"], by_tool["Bash"]["rejected"]) == (1, 1), by_tool
    assert by_tool["Write"]["wait_s"] >= 2  # the dialog was open at least 2 s
    rules = [r["rule"] for r in insights("friction")["tables"][2]["rows"]]
    assert rules == ["Edit(./*)"]  # the rejected `touch` is never suggested
    interrupted = insights("problems")["tables"][3]["rows"]
    assert [(r["cause"], r["last_tool"]) for r in interrupted] == [("permission rejected", "Bash")]
    for report, says in (("friction", "Write"), ("problems", "permission rejected")):  # what a user sees (pytest -s shows it)
        shown = subprocess.run(
            [sys.executable, "-I", str(REPO / "hooks" / "insights.py"), report, "--since", "1h"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert shown.returncode == 0 and says in shown.stdout, shown.stdout + shown.stderr
        print(f"\n$ insights {report} --since 1h\n{shown.stdout}")
