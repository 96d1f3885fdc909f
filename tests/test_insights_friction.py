"""insights friction / problems / scores (issue 11 points 5-7) on 2.1.328-style transcripts, and
`langfuse_hook.py slash` (point 4) against the stand-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from claude_code_langfuse import insights, signals
from transcript_factory import Clock, Transcript, text, tool_use

HOOK = Path(__file__).resolve().parent.parent / "hooks" / "langfuse_hook.py"
CWD = "/home/dev/proj"


def _result(t: Transcript, tid: str, content: str, is_error: bool = False, **fields) -> None:
    t._user(
        [{"tool_use_id": tid, "type": "tool_result", "content": content, "is_error": is_error}],
        sourceToolAssistantUUID=t.last_uuid,
        **fields,
    )


def write_session(root: Path) -> str:
    t = Transcript(str(root / "proj" / "s1.jsonl"), session_id="s1", cwd=CWD, clock=Clock(step_ms=1000), noise=False)
    t.prompt("run the tests")
    for i in range(3):  # approved three times (8 s wait each, the tool ran 1 s), the same command: a retry loop
        t.respond(tool_use("Bash", {"command": "npm test -- --watch=false"}, id=f"toolu_a{i}"))
        t.clock.tick(8000)
        _result(
            t, f"toolu_a{i}", "1 failing", True, permissionDecision={"decision": "accept", "source": "user_temporary", "grantScope": "once"}
        )
    t.respond(tool_use("Write", {"file_path": f"{CWD}/src/x.ts", "content": "x"}, id="toolu_w"))
    _result(
        t,
        "toolu_w",
        "Claude requested permissions to write",
        True,
        toolDenialKind="user-rejected",
        permissionDecision={"decision": "reject", "source": "config", "reasonCode": "unknown"},
    )
    t.respond(tool_use("Bash", {"command": "rm -rf build"}, id="toolu_r"))
    t.clock.tick(3000)
    _result(
        t, "toolu_r", "The user doesn't want to proceed with this tool use. The tool use was rejected", True, toolDenialKind="user-rejected"
    )
    t.interrupt(for_tool_use=True)
    t.prompt("read it")
    t.respond(tool_use("Bash", {"command": "rm -rf dist"}, id="toolu_rm_ok"))  # approved; `rm -rf build` was rejected
    t.clock.tick(2000)
    _result(t, "toolu_rm_ok", "", permissionDecision={"decision": "accept", "source": "user_temporary", "grantScope": "once"})
    for i in range(3):
        t.respond(tool_use("Read", {"file_path": f"{CWD}/src/x.ts", "offset": i}, id=f"toolu_read{i}"))
        _result(t, f"toolu_read{i}", "content")
    t.respond(tool_use("Read", {"file_path": f"{CWD}/src/y.ts"}, id="toolu_ok"))
    _result(t, "toolu_ok", "fine", permissionDecision={"decision": "accept", "source": "config", "reasonType": "mode"})
    t.respond(text("done"))
    return t.session_id


def facts(tmp_path: Path, write: bool = True) -> list:
    if write:
        write_session(tmp_path)
    window = insights.parse_window("2000-01-01", None, None)
    return insights.local_facts(window, [str(tmp_path)], insights.load_settings())


def table(report, title_start: str) -> list:
    return next(t.rows for t in report.tables if t.title.startswith(title_start))


def test_friction_counts_prompts_outcomes_wait_and_suggests_rules(tmp_path, monkeypatch):
    monkeypatch.setenv("CC_LANGFUSE_CONFIG", str(tmp_path / "none.json"))
    report = insights.report_friction(facts(tmp_path))
    by_tool = {r["tool"]: r for r in table(report, "Permission prompts by tool")}
    assert by_tool["Bash"]["prompts"] == 5 and by_tool["Bash"]["approved"] == 4 and by_tool["Bash"]["rejected"] == 1
    assert by_tool["Write"]["unasked"] == 1 and by_tool["Write"]["approved"] == 0
    assert "Read" not in by_tool  # allowed by the mode: no prompt
    # waits: 3 approvals of ~9 s (tool_use line -> result line) + the rejection; nothing for the unasked Write
    assert 27 < by_tool["Bash"]["wait_s"] < 45 and by_tool["Write"]["wait_s"] == 0
    rules = {r["rule"]: r for r in table(report, "Allow rules")}
    assert rules["Bash(npm test:*)"]["prompts"] == 3 and rules["Bash(npm test:*)"]["approved"] == 3
    assert rules["Edit(src/**)"]["prompts"] == 1
    assert not any(r.startswith("Bash(rm") for r in rules)  # the user rejected it: never suggested


def test_problems_find_the_loop_the_rereads_and_the_interrupt(tmp_path, monkeypatch):
    monkeypatch.setenv("CC_LANGFUSE_CONFIG", str(tmp_path / "none.json"))
    report = insights.report_problems(facts(tmp_path))
    loops = table(report, "Retry loops")
    assert [(r["tool"], r["calls"], r["errors"]) for r in loops] == [("Bash", 3, 3)]
    assert loops[0]["model_calls"] == 2 and loops[0]["tokens"] > 0  # the two repeats' model calls
    reads = table(report, "Files read")
    assert [(r["file"], r["reads"]) for r in reads] == [(f"{CWD}/src/x.ts", 3)]
    streaks = table(report, "Error streaks")
    assert [r["length"] for r in streaks] == [3]  # the three failing npm runs; the refusals neither count nor break it
    interrupted = table(report, "Turns interrupted")
    assert [(r["turn"], r["cause"]) for r in interrupted] == [(1, "permission rejected")]
    assert interrupted[0]["tokens"] > 0


def test_scores_are_deterministic_and_push_is_an_upsert(tmp_path, monkeypatch, langfuse_standin):
    monkeypatch.setenv("CC_LANGFUSE_CONFIG", str(tmp_path / "none.json"))
    rows = signals.trace_scores(facts(tmp_path))
    first = {(r["trace_id"], r["name"]): r for r in rows}
    assert len(first) == 2 * len(signals.SCORE_NAMES)
    turn1 = [r for r in rows if r["name"] == "interrupted" and r["value"] == 1]
    assert len(turn1) == 1
    values = {r["name"]: r["value"] for r in rows if r["trace_id"] == turn1[0]["trace_id"]}
    assert values == {
        "tool_errors": 3,
        "permission_prompts": 5,
        "permission_denials": 2,
        "permission_wait_s": values["permission_wait_s"],
        "interrupted": 1,
        "retry_loop": 1,
    }
    assert values["permission_wait_s"] > 25
    assert [r["id"] for r in signals.trace_scores(facts(tmp_path, write=False))] == [r["id"] for r in rows]
    for k, v in {
        "CC_LANGFUSE_BASE_URL": langfuse_standin.base_url,
        "CC_LANGFUSE_PUBLIC_KEY": langfuse_standin.public_key,
        "CC_LANGFUSE_SECRET_KEY": langfuse_standin.secret_key,
    }.items():
        monkeypatch.setenv(k, v)
    settings = insights.load_settings()
    assert insights.push_scores(rows, settings) == len(rows)
    assert insights.push_scores(rows, settings) == len(rows)  # again: same ids, updated, not doubled
    assert len(langfuse_standin.scores.scores) == len(rows)
    back = insights.langfuse_scores(insights.parse_window("1d", None, None), settings)
    assert sorted((r["trace_id"], r["name"], r["value"]) for r in back) == sorted((r["trace_id"], r["name"], r["value"]) for r in rows)


def test_slash_status_shows_the_session_url_and_caches_the_project(tmp_path, langfuse_standin):
    env = {k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ}
    env.update(
        HOME=str(tmp_path),
        CC_LANGFUSE_STATE_DIR=str(tmp_path / "state"),
        CC_LANGFUSE_CONFIG=str(tmp_path / "none.json"),
        CC_LANGFUSE_BASE_URL=langfuse_standin.base_url,
        CC_LANGFUSE_PUBLIC_KEY=langfuse_standin.public_key,
        CC_LANGFUSE_SECRET_KEY=langfuse_standin.secret_key,
        CLAUDE_CODE_SESSION_ID="sess-42",
    )

    def slash(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-I", str(HOOK), "slash", *args], env=env, capture_output=True, text=True, timeout=60)

    out = slash()
    assert out.returncode == 0, out.stderr
    assert f"{langfuse_standin.base_url}/project/standin-project/sessions/sess-42" in out.stdout
    assert "last delivery" in out.stdout and "queue" in out.stdout
    asked = sum(1 for r in langfuse_standin.requests if r.path.startswith("/api/public/projects"))
    assert asked == 1
    slash()
    assert sum(1 for r in langfuse_standin.requests if r.path.startswith("/api/public/projects")) == 1  # cached
    muted = slash("mute")
    assert muted.returncode == 0 and "muted session sess-42" in muted.stdout
    assert "MUTED" in slash().stdout
    assert "unmuted session sess-42" in slash("unmute").stdout
    bad = slash("nonsense")
    assert bad.returncode == 2 and "unknown" in bad.stdout


def test_plugin_ships_the_command():
    text_ = (Path(__file__).resolve().parent.parent / "commands" / "langfuse.md").read_text()
    head = text_.split("---")[1]
    assert "allowed-tools:" in head and "argument-hint:" in head
    assert '!`python3 -I "${CLAUDE_PLUGIN_ROOT}/hooks/langfuse_hook.py" slash $ARGUMENTS`' in text_
    assert json.loads((Path(__file__).resolve().parent.parent / ".claude-plugin" / "plugin.json").read_text())["name"]


def test_permission_outcomes_from_the_transcript_fields_or_the_hooks_metadata():
    tf = insights.ToolFact
    # an interactive rejection recorded without its text (content off, or read back from Langfuse)
    assert signals.permission_outcome(tf("Bash", True, permission={"denial_kind": "user-rejected"})) == "rejected"
    assert signals.permission_outcome(tf("Bash", True, permission={"denial_kind": "permission-rule"})) == "denied"
    assert signals.permission_outcome(tf("Bash", True, error="The user doesn't want to proceed with this tool use.")) == "rejected"
    assert signals.permission_outcome(tf("Bash", True, error="Exit code 1")) == ""
    assert signals.permission_outcome(tf("Bash", permission={"decision": "reject", "source": "config", "reason_type": "rule"})) == "denied"
    # the tool observation's metadata as the hook writes it (flat keys, the label, the measured wait)
    meta = {
        "permission": "approved-once",
        "permission_decision": "accept",
        "permission_source": "user_temporary",
        "permission_wait_ms": 8000,
    }
    fact = insights._tool_fact({"name": "Write", "metadata": meta, "start": "2026-01-01T00:00:00.000Z", "end": "2026-01-01T00:00:20.000Z"})
    assert signals.permission_outcome(fact) == "approved" and signals.wait_seconds(fact) == 8.0
    label_only = insights._tool_fact({"name": "Write", "metadata": {"permission": "rejected-by-user"}})
    assert signals.permission_outcome(label_only) == "rejected"
    json_encoded = insights._tool_fact({"name": "Write", "metadata": {"permission_decision": '"accept"', "permission_source": '"config"'}})
    assert signals.permission_outcome(json_encoded) == "allowed"


def test_rule_suggestions():
    tf = insights.ToolFact
    assert signals.suggest_rules(tf("Bash", input={"command": "FOO=1 npm run build && git status | head"})) == [
        "Bash(npm run:*)",
        "Bash(git status:*)",
        "Bash(head:*)",
    ]
    assert signals.suggest_rules(tf("Edit", input={"file_path": "/p/src/a/b.ts"}), "/p") == ["Edit(src/a/**)"]
    assert signals.suggest_rules(tf("Write", input={"file_path": "/elsewhere/x"}), "/p") == ["Edit(//elsewhere/**)"]
    assert signals.suggest_rules(tf("WebFetch", input={"url": "https://docs.example.com/a"})) == ["WebFetch(domain:docs.example.com)"]
    assert signals.suggest_rules(tf("mcp__gh__issue", input={"n": 1})) == ["mcp__gh__issue"]


def test_langfuse_source_gives_the_same_friction_and_problems_as_local(tmp_path, monkeypatch, capsys):
    """The hook's own records (permission facts in the tool metadata), stored the way Langfuse v4
    keeps them (metadata values as strings), read back through the v2 observations API."""
    import secrets

    from test_insights import ReadAPIStandin, records_for, run_json, stored_observations

    home = tmp_path / "home"
    write_session(home / ".claude" / "projects")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CC_LANGFUSE_CONFIG", str(tmp_path / "none.json"))
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    token = secrets.token_hex(6)
    pk, sk = f"pk-lf-fr-{token}", f"sk-lf-fr-{token}"
    standin = ReadAPIStandin(pk, sk, [o for r in records_for(home) for o in stored_observations(r)])
    monkeypatch.setenv("CC_LANGFUSE_PUBLIC_KEY", pk)
    monkeypatch.setenv("CC_LANGFUSE_SECRET_KEY", sk)
    monkeypatch.setenv("CC_LANGFUSE_BASE_URL", standin.base_url)
    try:
        for report in ("friction", "problems"):
            local = run_json(capsys, report, "--since", "2000-01-01", "--source", "local")
            remote = run_json(capsys, report, "--since", "2000-01-01", "--source", "langfuse")
            assert any(t["rows"] for t in local["tables"])

            # cost: Langfuse's own model prices against the local estimate (the stand-in prices other models)
            def no_cost(tables):
                return [[{k: v for k, v in r.items() if k != "cost"} for r in t["rows"]] for t in tables]

            assert no_cost(remote["tables"]) == no_cost(local["tables"]), report
        tools = [r for r in standin.requests if r["params"].get("type") == "TOOL"]
        assert tools and all("io" in r["params"]["fields"] for r in tools)
    finally:
        standin.close()
