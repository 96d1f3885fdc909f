"""insights friction / problems / scores on sessions made with the real Claude Code CLI 2.1.328
(offline, scripted Messages API), with every hook event registered and a Langfuse stand-in.

Sessions: a Write the `-p` run may not do (denied, asked for three times: also a retry loop), a
failing Bash three times in a row (an error streak and a retry loop) and one file read three times,
a subagent, and a turn that ends on an API error. Run with -s to see the reports."""

from __future__ import annotations

import json
import subprocess

import pytest
from fake_messages_api import Script, api_error, reply, tool_use
from fixtures_claude_cli import run_claude
from test_e2e_cli import PYTHON, new_standin
from test_e2e_hook_events import traced_with_every_event

pytestmark = pytest.mark.e2e
INSIGHTS = __import__("pathlib").Path(__file__).resolve().parent.parent / "hooks" / "insights.py"


def insights(t, *args: str) -> str:
    proc = subprocess.run(
        [PYTHON, "-I", str(INSIGHTS), *args, "--since", "1h"], env=t.hook_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_friction_and_problems_on_real_cli_sessions(claude_cli, tmp_path):
    standin = new_standin().start()
    try:
        t = traced_with_every_event(tmp_path, standin)
        notes = str(t.project / "notes.txt")
        (t.project / "data.txt").write_text("a\nb\n")
        data = str(t.project / "data.txt")
        write = {"file_path": notes, "content": "hello"}
        t.run(
            "write notes.txt",
            [
                reply(tool_use("Write", write, id="toolu_w1")),
                reply(tool_use("Write", write, id="toolu_w2")),
                reply(tool_use("Write", write, id="toolu_w3")),
                reply("I may not write files here."),
            ],
        )
        failing = {"command": "sh -c 'echo failing >&2; exit 3'", "description": "run the check"}
        t.run(
            "run the check and look at data.txt",
            [
                reply(tool_use("Bash", failing, id="toolu_b1")),
                reply(tool_use("Bash", failing, id="toolu_b2")),
                reply(tool_use("Bash", failing, id="toolu_b3")),
                reply(tool_use("Read", {"file_path": data}, id="toolu_r1")),
                reply(tool_use("Read", {"file_path": data}, id="toolu_r2")),
                reply(tool_use("Read", {"file_path": data}, id="toolu_r3")),
                reply("The check fails with exit 3."),
            ],
        )
        t.run(
            "delegate counting to a subagent",
            Script(
                main=[
                    reply(
                        tool_use(
                            "Agent",
                            {"description": "count", "prompt": "SUBTASK: count the files", "subagent_type": "general-purpose"},
                            id="toolu_ag",
                        )
                    ),
                    reply("Launched; waiting."),
                    reply("The subagent says 2 files."),
                ],
                agents={
                    "SUBTASK": [
                        reply(tool_use("Bash", {"command": "ls | wc -l", "description": "count"}, id="toolu_sb")),
                        reply("2 files."),
                    ]
                },
            ),
        )
        t.env["CLAUDE_CODE_MAX_RETRIES"] = "1"
        run_claude(t.home, t.project, "this one fails", [api_error(529), api_error(529)], env=t.env, check=False)
        t.wait_delivered()

        friction = insights(t, "friction")
        print("\n$ insights friction --since 1h\n" + friction)
        problems = insights(t, "problems")
        print("$ insights problems --since 1h\n" + problems)
        fj = json.loads(insights(t, "friction", "--json"))
        by_tool = {r["tool"]: r for r in fj["tables"][0]["rows"]}
        assert by_tool["Write"]["prompts"] == 3 and by_tool["Write"]["unasked"] == 3, by_tool
        rules = [r["rule"] for r in fj["tables"][2]["rows"]]
        assert rules == ["Edit(./*)"], rules  # the file sits in the project's top folder
        pj = json.loads(insights(t, "problems", "--json"))
        loops = {r["tool"]: r for r in pj["tables"][0]["rows"]}
        assert loops["Bash"]["calls"] == 3 and loops["Bash"]["errors"] == 3 and loops["Write"]["calls"] == 3
        assert [(r["file"], r["reads"]) for r in pj["tables"][1]["rows"]] == [(data, 3)]
        assert [r["length"] for r in pj["tables"][2]["rows"]] == [3]  # the Bash failures; the Write denials are friction

        pushed = insights(t, "scores", "--push")
        print("$ insights scores --push --since 1h\n" + pushed)
        back = insights(t, "scores", "--source", "langfuse")
        print("$ insights scores --source langfuse --since 1h\n" + back)
        assert standin.scores.scores and len(standin.scores.scores) == standin.scores.posts  # one POST per score
        insights(t, "scores", "--push")
        assert len(standin.scores.scores) * 2 == standin.scores.posts  # pushed again: updated, not doubled
        local = json.loads(insights(t, "scores", "--json"))["tables"][0]["rows"]
        remote = json.loads(insights(t, "scores", "--source", "langfuse", "--json"))["tables"][0]["rows"]
        assert local == remote
    finally:
        standin.stop()
