"""`langfuse_hook.py backfill`: sessions from before the install, with the live hook's ids."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
from transcript_factory import Clock, HookRunner, Transcript, stop_event, text, tool_use, wait_for_worker

HOOK = pathlib.Path(__file__).resolve().parent.parent / "hooks" / "langfuse_hook.py"


def run_cli(home: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CC_LANGFUSE_BASE_URL": "http://127.0.0.1:9",
        "CC_LANGFUSE_RETRY_FOR": "0",  # the worker does not stay to retry the closed port
        "CC_LANGFUSE_PUBLIC_KEY": "pk-lf-test",
        "CC_LANGFUSE_SECRET_KEY": "sk-lf-test",
        "USER": "tester",
    }
    return subprocess.run(
        [sys.executable, str(HOOK), *args], env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def queue(home: pathlib.Path) -> list[dict]:
    path = home / ".claude" / "state" / "pending_traces.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def make_project(home: pathlib.Path, name: str, sessions: int, turns: int, opt_out: bool = False) -> list[Transcript]:
    """Sessions of a project under ~/.claude/projects/<slug>/, as Claude Code lays them out."""
    cwd = home / "work" / name
    (cwd / ".git").mkdir(parents=True)
    if opt_out:
        (cwd / ".claude").mkdir()
        (cwd / ".claude" / "settings.local.json").write_text(json.dumps({"env": {"TRACE_TO_LANGFUSE": "false"}}))
    slug = "-" + str(cwd).strip("/").replace("/", "-")
    out = []
    for s in range(sessions):
        t = Transcript(
            str(home / ".claude" / "projects" / slug / f"{name}-session-{s}.jsonl"),
            session_id=f"{name}-session-{s}",
            cwd=str(cwd),
            clock=Clock(f"2025-05-0{s + 1}T10:00:00.000Z"),
        )
        for i in range(turns):
            if i == 0:
                t.simple_turn(f"{name} question {i}", f"answer {i}", tool=("Bash", {"command": "ls"}, "a.txt"))
            else:
                t.simple_turn(f"{name} question {i}", f"answer {i}")
        out.append(t)
    return out


@pytest.fixture
def home(tmp_path: pathlib.Path) -> pathlib.Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def test_dry_run_reports_and_writes_nothing(home):
    make_project(home, "alpha", sessions=2, turns=3)
    r = run_cli(home, "backfill", "--since", "3650d", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "2 session(s), 6 turn(s) read, 6 trace record(s) would queue" in r.stdout
    assert "2025-05-01 .. 2025-05-02" in r.stdout  # the sessions' own date range
    assert not (home / ".claude" / "state").exists()  # nothing queued, no state, no log


def test_backfill_queues_every_turn_once_even_when_run_twice(home):
    make_project(home, "alpha", sessions=2, turns=3)
    r = run_cli(home, "backfill", "--since", "3650d")
    assert r.returncode == 0, r.stderr
    first = queue(home)
    assert len(first) == 6 and len({rec["trace"]["id"] for rec in first}) == 6
    assert all(rec["trace"]["tags"] == ["claude-code", "alpha"] for rec in first)
    r = run_cli(home, "backfill", "--since", "3650d")
    assert r.returncode == 0, r.stderr
    assert "0 trace record(s) queued" in r.stdout
    assert queue(home) == first


def test_backfill_indexes_its_turns_for_late_facts(home):
    """A fact hook event for a backfilled session (it goes on live) finds the queued turns in the
    session's queued index without reading the transcript, as for turns the live hook queued."""
    from claude_code_langfuse import facts
    from claude_code_langfuse.files import Paths

    sessions = make_project(home, "gamma", sessions=2, turns=2)
    assert run_cli(home, "backfill", "--since", "3650d").returncode == 0
    paths = Paths(str(home / ".claude" / "state"))
    for t in sessions:
        index = facts.load_queued(paths, t.session_id)
        assert len(index["turns"]) == 2 and all(turn["obs"] for turn in index["turns"].values()), index


def test_backfill_gives_the_ids_the_live_hook_gives(home, tmp_path):
    [t] = make_project(home, "alpha", sessions=1, turns=3)
    live = HookRunner(str(tmp_path / "live-state"))
    live.run(stop_event(t, "answer 2"))
    r = run_cli(home, "backfill", "--since", "3650d")
    assert r.returncode == 0, r.stderr
    backfilled = {rec["key"]: rec for rec in queue(home)}
    live_latest = live.latest()
    assert set(backfilled) == set(live_latest)
    for key, rec in live_latest.items():
        assert [o["id"] for o in rec["observations"]] == [o["id"] for o in backfilled[key]["observations"]]
        assert [(o["start"], o["end"]) for o in rec["observations"]] == [(o["start"], o["end"]) for o in backfilled[key]["observations"]]


def test_backfill_over_sessions_the_hook_already_traced_adds_nothing(home):
    [t] = make_project(home, "alpha", sessions=1, turns=2)
    env_state = home / ".claude" / "state"
    event = json.dumps(stop_event(t, "answer 1")).encode()
    p = subprocess.run(
        [sys.executable, "-I", str(HOOK)],
        input=event,
        capture_output=True,
        timeout=60,
        env={
            "HOME": str(home),
            "PATH": os.environ.get("PATH", ""),
            "CC_LANGFUSE_BASE_URL": "http://127.0.0.1:9",
            "CC_LANGFUSE_RETRY_FOR": "0",
            "USER": "tester",
        },
    )
    assert p.returncode == 0 and p.stdout == b""
    wait_for_worker(env_state)
    before = queue(home)
    assert len(before) == 2 and env_state.is_dir()
    r = run_cli(home, "backfill", "--since", "3650d")
    assert r.returncode == 0, r.stderr
    assert queue(home) == before


def test_opted_out_projects_and_other_projects_are_skipped(home):
    make_project(home, "alpha", sessions=1, turns=2)
    make_project(home, "secret-project", sessions=1, turns=2, opt_out=True)
    make_project(home, "beta", sessions=1, turns=1)
    r = run_cli(home, "backfill", "--since", "3650d")
    assert r.returncode == 0, r.stderr
    assert "1 session(s) skipped: their project sets TRACE_TO_LANGFUSE=false" in r.stdout
    assert {rec["trace"]["tags"][1] for rec in queue(home)} == {"alpha", "beta"}
    r = run_cli(home, "backfill", "--since", "3650d", "--project", "beta", "--dry-run")
    assert "1 session(s), 1 turn(s) read" in r.stdout


def test_since_limits_by_file_age_and_bad_since_is_a_clear_error(home):
    [old] = make_project(home, "alpha", sessions=1, turns=1)
    os.utime(old.path, (1_500_000_000, 1_500_000_000))  # 2017
    make_project(home, "beta", sessions=1, turns=1)
    r = run_cli(home, "backfill", "--since", "30d", "--dry-run")
    assert "1 session(s), 1 turn(s) read" in r.stdout
    r = run_cli(home, "backfill", "--since", "last tuesday")
    assert r.returncode == 2 and "use a duration like 30d" in r.stderr and "Traceback" not in r.stderr


def test_subagent_layouts_are_backfilled_nested(home):
    [t] = make_project(home, "alpha", sessions=1, turns=0)
    t.prompt("research this")
    call = tool_use("Agent", {"description": "Research task", "prompt": "look it up", "subagent_type": "general-purpose"})
    t.respond(text("Starting an agent."), call)
    sub = t.subagent("a1b2c3d4e5f6a7b8c", call["id"])
    sub.agent_prompt("look it up")
    sub.respond(text("found it"))
    t.tool_results((call["id"], "found it"), tool_use_result={"agentId": "a1b2c3d4e5f6a7b8c", "status": "completed"})
    t.respond(text("Done."))
    r = run_cli(home, "backfill", "--since", "3650d")
    assert r.returncode == 0, r.stderr
    [rec] = queue(home)
    by_type = {}
    for o in rec["observations"]:
        by_type.setdefault(o["type"], []).append(o)
    [agent] = by_type["agent"]
    [agent_tool] = [o for o in by_type["tool"] if o["name"] == "Agent"]
    assert agent["parent_id"] == agent_tool["id"]
    assert any(g["parent_id"] == agent["id"] and "found it" in json.dumps(g["output"]) for g in by_type["generation"])
