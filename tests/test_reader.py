"""Incremental reading and the hook's critical path, as Claude Code runs it.

In-process tests drive `run_hook` through `HookRunner` (private state folder, no sender); the
hook-mode tests start `python hooks/langfuse_hook.py` with the event on stdin, exactly like the
command registered in settings.json, with HOME and the state folder in a temp dir and the server
URL on a closed port so the detached sender fails fast and keeps the queue.
"""

from __future__ import annotations

import json
import os
import pathlib
import stat
import subprocess
import sys

import pytest
from transcript_factory import (
    Transcript,
    observations,
    root,
    session_end_event,
    stop_event,
    text,
    tool_use,
    transcript_timestamps,
    wait_for_worker,
)
from transcript_factory import hook_process_env as hook_env

HOOK = str(pathlib.Path(__file__).resolve().parent.parent / "hooks" / "langfuse_hook.py")


@pytest.fixture
def session(tmp_path):
    return Transcript(str(tmp_path / "home" / ".claude" / "projects" / "-home-dev-proj" / "5b469540-beb0-4db7-b5e1-5bf71f36cd69.jsonl"))


def turns_by_prompt(records) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(r["trace"]["metadata"].get("prompt_id"), []).append(r)
    return out


def latest_turns(runner) -> list[dict]:
    return sorted((r for r in runner.latest().values() if r["kind"] == "turn"), key=lambda r: r["trace"]["metadata"]["turn_number"])


# ============================================================================ partial lines, shrinking files


def test_half_written_last_line_is_left_for_the_next_run(session, runner):
    session.simple_turn("first", "first answer")
    p2 = session.prompt("second")
    # build the answer line without writing it, then write only its first half
    full = Transcript.line(
        session.envelope(
            "assistant",
            message={
                "model": "claude-opus-5-5",
                "id": "msg_half",
                "type": "message",
                "role": "assistant",
                "content": [text("second answer")],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 3, "output_tokens": 9},
            },
            apiBlockIndex=0,
        )
    )
    half_at = session.size()
    session.raw(full[: len(full) // 2])
    runner.run(stop_event(session))  # no last_assistant_message: an older CLI
    entry = runner.entry(session)
    assert entry["offset"] <= half_at
    assert not any("unreadable" in line for line in runner.logs), runner.logs
    session.raw(full[len(full) // 2 :])
    session.turn_duration()
    runner.run(stop_event(session, "second answer"))
    turns = latest_turns(runner)
    assert [root(t)["output"] for t in turns] == ["first answer", "second answer"]
    by_prompt = turns_by_prompt(runner.queue())
    assert len({r["trace"]["id"] for r in by_prompt[p2["promptId"]]}) == 1
    gens = observations(turns[1], "generation")
    assert len(gens) == 1 and gens[0]["usage_details"]["output"] == 9


def test_half_written_prompt_line_opens_no_turn_until_complete(session, runner):
    session.simple_turn("first", "first answer")
    line = Transcript.line(
        session.envelope("user", message={"role": "user", "content": "second"}, promptId="p-2", origin={"kind": "human"})
    )
    session.raw(line[:30])
    runner.run(stop_event(session, "first answer"))
    assert [r["trace"]["name"] for r in runner.queue()] == ["first"]
    session.raw(line[30:])
    session.respond(text("second answer"))
    session.turn_duration()
    runner.run(stop_event(session, "second answer", prompt_id="p-2"))
    names = [r["trace"]["name"] for r in runner.queue()]
    assert names.count("first") == 1 and names.count("second") == 1


def _truncate_below(path: str, size: int) -> None:
    """Cut the file in place to the last whole line before `size` (what Claude Code does on a stream error)."""
    with open(path, "rb") as f:
        data = f.read(size)
    with open(path, "r+b") as f:
        f.truncate(data.rfind(b"\n") + 1)


@pytest.mark.parametrize("run_between", [True, False], ids=["hook-runs-while-shorter", "truncated-and-regrown-between-runs"])
def test_shrunk_file_is_reread_without_new_ids_or_duplicates(session, runner, run_between):
    session.simple_turn("one", "answer one")
    session.simple_turn("two", "answer two")
    cut = session.size()
    session.simple_turn("three", "answer three")
    runner.run(stop_event(session, "answer three"))
    assert runner.entry(session)["offset"] >= cut
    # Claude Code truncates in place below our offset (drops turn two's last line), then writes on
    _truncate_below(session.path, cut - 1)
    if run_between:
        runner.run(stop_event(session, "answer two"))
    session.simple_turn("three", "answer three, retried with a longer text so the file regrows past the old offset")
    runner.run(stop_event(session, "answer three, retried with a longer text so the file regrows past the old offset"))
    queue = runner.queue()
    for pid, recs in turns_by_prompt(queue).items():
        assert len({r["trace"]["id"] for r in recs}) == 1, pid
    names = [r["trace"]["name"] for r in queue]
    assert names.count("one") == 1, "an unchanged turn was queued again after the re-read"
    outputs = [root(t)["output"] for t in latest_turns(runner)]
    assert outputs[:2] == ["answer one", "answer two"]
    assert outputs[-1].startswith("answer three, retried")


def test_file_replaced_with_same_content_queues_nothing_new(session, runner):
    session.simple_turn("one", "answer one")
    session.simple_turn("two", "answer two")
    runner.run(stop_event(session, "answer two"))
    before = runner.queue()
    data = open(session.path, "rb").read()
    os.replace(session.path, session.path + ".old")
    with open(session.path, "wb") as f:
        f.write(data)
    runner.run(stop_event(session, "answer two"))
    assert runner.queue() == before


def test_line_dropped_inside_the_open_turn_is_not_traced(session, runner):
    session.simple_turn("one", "answer one")
    session.prompt("two")
    session.respond(text("partial answ"), msg_id="msg_dropped")
    runner.run(stop_event(session, "partial answ"))
    # the failed stream's line is cut off, the retry is written in its place
    with open(session.path, "rb") as f:
        data = f.read()
    body = data[:-1]
    with open(session.path, "r+b") as f:
        f.truncate(body.rfind(b"\n") + 1)
    session.respond(text("complete answer after a retry"), msg_id="msg_retry")
    session.turn_duration()
    runner.run(stop_event(session, "complete answer after a retry"))
    second = latest_turns(runner)[1]
    gens = observations(second, "generation")
    assert [g["metadata"]["message_id"] for g in gens] == ["msg_retry"]
    assert root(second)["output"] == "complete answer after a retry"


def test_corrupt_line_is_skipped_and_the_rest_traced(session, runner):
    session.simple_turn("one", "answer one")
    session.raw(b'{"type":"assistant","message":{"id":"msg_x","content":[{"type":"te\n')
    session.raw(b"\x00\x00\x00 not json at all \xff\xfe\n")
    session.simple_turn("two", "answer two")
    runner.run(stop_event(session, "answer two"))
    assert [root(t)["output"] for t in latest_turns(runner)] == ["answer one", "answer two"]


HOSTILE_ROWS = [
    {"type": "user", "message": "a message that is a bare string"},
    {"type": "user", "message": {"role": "user", "content": [1, None, "x", {"type": "tool_result"}]}},
    {"type": "assistant", "message": None},
    {"type": "assistant", "message": {"id": "msg_odd", "content": "plain string content", "usage": {"output_tokens": "12"}}},
    {"type": "system", "subtype": "stop_hook_summary", "hookInfos": 7},
    {"type": "system", "subtype": "compact_boundary", "compactMetadata": "odd"},
    {
        "type": "user",
        "timestamp": 1700000000,
        "uuid": 5,
        "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": None}]},
    },
    {"type": 12, "message": {}},
    {"type": "some-future-line", "payload": {"deep": [1, 2, 3]}},
    [1, 2, 3],
    "just a string",
    None,
]


@pytest.mark.parametrize("hostile", HOSTILE_ROWS, ids=[f"row{i}" for i in range(len(HOSTILE_ROWS))])
def test_unexpected_row_shapes_do_not_lose_the_session(session, runner, hostile):
    """Rule 9: unknown or odd lines are skipped; the turns around them are still traced."""
    session.simple_turn("one", "answer one")
    session.prompt("two")
    session.raw(json.dumps(hostile).encode() + b"\n")
    session.respond(text("answer two"))
    session.turn_duration()
    session.simple_turn("three", "answer three")
    runner.run(session_end_event(session))
    assert not [line for line in runner.logs if line.startswith("ERROR")], runner.logs
    assert [root(t)["output"] for t in latest_turns(runner)] == ["answer one", "answer two", "answer three"]


# ============================================================================ the Stop-before-flush race


def test_stop_before_flush_uses_the_event_text_then_upserts_the_disk_answer(session, runner):
    session.simple_turn("one", "answer one")
    session.prompt("two")
    call = tool_use("Bash", {"command": "make"})
    session.respond(text("Building."), call)
    session.tool_results((call["id"], "ok"))
    # Stop fires; the final answer is still in Claude Code's write buffer
    (rec,) = [r for r in runner.run(stop_event(session, "Build finished: 0 errors.")) if r["trace"]["name"] == "two"]
    r = root(rec)
    assert r["output"] == "Build finished: 0 errors."
    assert r["metadata"].get("output_source") == "last_assistant_message"
    assert r["metadata"]["complete"] is False
    session.respond(text("Build finished: 0 errors."))
    session.stop_hook_summary()
    session.turn_duration()
    runner.run(session_end_event(session))
    final = runner.latest()[rec["key"]]
    assert final["trace"]["id"] == rec["trace"]["id"]
    assert root(final)["output"] == "Build finished: 0 errors."
    assert "output_source" not in root(final)["metadata"]
    assert root(final)["metadata"]["complete"] is True
    assert len(observations(final, "generation")) == 2
    # the observations of the first version keep their ids in the final one
    assert {o["id"] for o in rec["observations"]} <= {o["id"] for o in final["observations"]}


def test_stop_race_never_patches_another_prompts_turn(session, runner):
    """`-p` mode writes no turn_duration: turn one is last on disk when prompt two's Stop arrives early."""
    session.prompt("one")
    session.respond(text("answer one"))
    runner.run(stop_event(session, "answer one"))
    # prompt two's Stop arrives before any of prompt two's lines are on disk
    runner.run(stop_event(session, "answer two", prompt_id="prompt-two-not-on-disk-yet"))
    (one,) = [r for r in runner.latest().values() if r["trace"]["name"] == "one"]
    assert root(one)["output"] == "answer one"
    assert "output_source" not in root(one)["metadata"]


def test_stop_firing_three_times_for_one_prompt_is_one_trace(session, runner):
    session.prompt("write the report")
    session.respond(text("Report written."))
    runner.run(stop_event(session, "Report written."))
    session.stop_feedback("Add a summary line.")
    session.stop_hook_summary()
    runner.run(stop_event(session, "Summary: fine.", stop_hook_active=True))  # before the answer is flushed
    session.respond(text("Summary: fine."))
    session.stop_hook_summary()
    runner.run(stop_event(session, "Summary: fine.", stop_hook_active=True))
    session.turn_duration()
    runner.run(session_end_event(session))
    queue = runner.queue()
    assert len({r["trace"]["id"] for r in queue}) == 1
    (final,) = runner.latest().values()
    assert root(final)["output"] == "Summary: fine."
    assert len(observations(final, "generation")) == 2


def test_rerun_without_new_bytes_queues_nothing(session, runner):
    session.simple_turn("one", "answer one")
    session.simple_turn("two", "answer two")
    assert len(runner.run(stop_event(session, "answer two"))) == 2
    assert runner.run(stop_event(session, "answer two")) == []
    assert runner.run(session_end_event(session)) == []


# ============================================================================ cost follows new bytes


def test_a_run_reads_from_the_stored_offset_only(session, runner):
    for i in range(60):
        session.simple_turn(f"question alpha {i:03d}", f"answer {i:03d}", tool=("Bash", {"command": f"echo {i}"}, str(i)))
    runner.run(stop_event(session, "answer 059"))
    assert len(latest_turns(runner)) == 60
    entry = runner.entry(session)
    last_start = open(session.path, "rb").read().rfind(b'"question alpha 059"')
    assert 0 < entry["offset"] <= last_start
    queued_before = len(runner.queue())
    # rewrite an early prompt in place (same length): a run that re-read old bytes would re-queue it
    data = bytearray(open(session.path, "rb").read())
    pos = data.find(b"question alpha 000")
    data[pos : pos + 18] = b"question omega 000"
    with open(session.path, "r+b") as f:
        f.write(bytes(data))
    session.simple_turn("one more", "last answer")
    new = runner.run(stop_event(session, "last answer"))
    assert [r["trace"]["name"] for r in new] == ["one more"]
    assert len(runner.queue()) == queued_before + 1
    assert runner.entry(session)["offset"] > entry["offset"]
    assert latest_turns(runner)[-1]["trace"]["metadata"]["turn_number"] == 61


# ============================================================================ hook mode (subprocess)


def run_hook_process(stdin: bytes, env: dict) -> subprocess.CompletedProcess:
    """The hook as Claude Code runs it, then the wait for the detached worker it woke."""
    proc = subprocess.run([sys.executable, "-I", HOOK], input=stdin, env=env, capture_output=True, timeout=60)
    wait_for_worker(env["CC_LANGFUSE_STATE_DIR"])
    return proc


def queued(state_dir) -> list[dict]:
    path = pathlib.Path(state_dir) / "pending_traces.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@pytest.mark.parametrize(
    "stdin_kind", ["garbage", "empty", "missing-transcript", "directory", "hostile-transcript", "not-object", "binary"]
)
def test_hook_prints_nothing_and_exits_0(tmp_path, session, stdin_kind):
    if stdin_kind == "garbage":
        stdin = b"{this is not json"
    elif stdin_kind == "empty":
        stdin = b""
    elif stdin_kind == "not-object":
        stdin = b'["Stop"]'
    elif stdin_kind == "binary":
        stdin = bytes(range(256)) * 4
    elif stdin_kind == "missing-transcript":
        stdin = json.dumps(stop_event(session, "x") | {"transcript_path": str(tmp_path / "nope" / "gone.jsonl")}).encode()
    elif stdin_kind == "directory":
        stdin = json.dumps(stop_event(session, "x") | {"transcript_path": str(tmp_path)}).encode()
    else:
        session.simple_turn("one", "answer one")
        for row in HOSTILE_ROWS:
            session.raw(json.dumps(row).encode() + b"\n")
        session.raw(b"\xff\xfe\x00garbage\n" + b"{" * 10000 + b"\n")
        session.simple_turn("two", "answer two")
        stdin = json.dumps(stop_event(session, "answer two")).encode()
    proc = run_hook_process(stdin, hook_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b""
    assert proc.stderr == b""
    if stdin_kind == "hostile-transcript":
        # nothing lost: the good turns around the odd lines are queued
        assert sorted(r["trace"]["name"] for r in queued(tmp_path / "state")) == ["one", "two"]
    log = tmp_path / "state" / "langfuse_hook.log"
    if stdin_kind in ("garbage", "empty", "not-object", "binary", "missing-transcript", "directory"):
        # the user can find out why nothing was traced
        assert log.exists() and log.read_text().strip()


def test_hook_files_are_private(tmp_path, session):
    session.simple_turn("one", "answer one")
    proc = run_hook_process(json.dumps(stop_event(session, "answer one")).encode(), hook_env(tmp_path, CC_LANGFUSE_DEBUG="true"))
    assert proc.returncode == 0 and proc.stdout == b""
    state = tmp_path / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "locks").stat().st_mode) == 0o700
    for name in ("langfuse_state.json", "pending_traces.jsonl", "langfuse_hook.log"):
        assert (state / name).exists(), name
    for p in state.rglob("*"):
        try:
            st = p.stat()
        except FileNotFoundError:
            continue  # a temp file of the detached sender, renamed meanwhile
        if stat.S_ISREG(st.st_mode):
            assert stat.S_IMODE(st.st_mode) == 0o600, p
    assert [r["trace"]["name"] for r in queued(state)] == ["one"]


@pytest.mark.parametrize("value", ["false", "0", "off"])
def test_tracing_off_queues_nothing_and_only_moves_the_cursor(tmp_path, session, value):
    session.simple_turn("one", "answer one")
    proc = run_hook_process(json.dumps(stop_event(session, "answer one")).encode(), hook_env(tmp_path, TRACE_TO_LANGFUSE=value))
    assert proc.returncode == 0 and proc.stdout == b""
    state = tmp_path / "state"
    # nothing of the turn is kept: no queue, no log; only the cursor moves past what was said
    # while tracing was off, so turning it back on never uploads that stretch
    # (the worker's inbox is empty again and its status file says only when it ran)
    assert sorted(p.name for p in state.iterdir()) == ["inbox", "langfuse_sender.json", "langfuse_state.json", "locks"]
    assert list((state / "inbox").iterdir()) == []
    assert set(json.loads((state / "langfuse_sender.json").read_text())) <= {"pid", "running_since"}
    entry = next(iter(json.loads((state / "langfuse_state.json").read_text())["transcripts"].values()))
    assert entry["offset"] == os.path.getsize(session.path) and entry["emitted"] == {}
    assert "answer one" not in (state / "langfuse_state.json").read_text()


def test_records_are_deterministic_and_dated_by_the_transcript(tmp_path, session):
    session.simple_turn("one", "answer one", tool=("Bash", {"command": "ls"}, "a b"))
    session.prompt("two")
    session.respond(text("thinking aloud"), tool_use("Read", {"file_path": "/x"}, id="toolu_fixed_1"))
    session.tool_results(("toolu_fixed_1", "x content"))
    session.respond(text("answer two"))
    session.turn_duration()
    event = json.dumps(stop_event(session, "answer two")).encode()
    runs = []
    for name in ("a", "b"):
        env = hook_env(tmp_path, CC_LANGFUSE_STATE_DIR=str(tmp_path / f"state-{name}"))
        assert run_hook_process(event, env).returncode == 0
        runs.append([{k: v for k, v in r.items() if k != "queued_at"} for r in queued(tmp_path / f"state-{name}")])
    assert runs[0] and runs[0] == runs[1]
    stamps = transcript_timestamps(session.path)
    for rec in runs[0]:
        assert len(rec["trace"]["id"]) == 32 and int(rec["trace"]["id"], 16) >= 0
        for o in rec["observations"]:
            assert len(o["id"]) == 16
            assert o["start"] in stamps and o["end"] in stamps, o
            if o["completion_start_time"]:
                assert o["completion_start_time"] in stamps


def test_concurrent_runs_on_one_session_queue_each_turn_once(tmp_path, session):
    for i in range(5):
        session.simple_turn(f"q{i}", f"a{i}", tool=("Bash", {"command": "true"}, ""))
    event = json.dumps(stop_event(session, "a4")).encode()
    env = hook_env(tmp_path)
    procs = [
        subprocess.Popen([sys.executable, "-I", HOOK], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for _ in range(8)
    ]
    outs = [p.communicate(event, timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs) and all(o == (b"", b"") for o in outs)
    wait_for_worker(tmp_path / "state")
    keys = [r["key"] for r in queued(tmp_path / "state")]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 5
    state = json.loads((tmp_path / "state" / "langfuse_state.json").read_text())
    (entry,) = state["transcripts"].values()
    assert entry["session_id"] == session.session_id
    assert 0 < entry["offset"] < os.path.getsize(session.path)


def test_concurrent_runs_of_eight_sessions_keep_all_turns(tmp_path):
    sessions = []
    for i in range(8):
        t = Transcript(str(tmp_path / "home" / ".claude" / "projects" / "-p" / f"00000000-0000-4000-8000-00000000000{i}.jsonl"))
        t.simple_turn(f"s{i} first", "ok")
        t.simple_turn(f"s{i} second", "ok")
        sessions.append(t)
    env = hook_env(tmp_path)
    procs = []
    for t in sessions:
        p = subprocess.Popen([sys.executable, "-I", HOOK], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        procs.append((p, json.dumps(stop_event(t, "ok")).encode()))
    for p, data in procs:
        assert p.communicate(data, timeout=60) == (b"", b"") and p.returncode == 0
    wait_for_worker(tmp_path / "state")
    names = sorted(r["trace"]["name"] for r in queued(tmp_path / "state"))
    assert names == sorted(f"s{i} {w}" for i in range(8) for w in ("first", "second"))
    state = json.loads((tmp_path / "state" / "langfuse_state.json").read_text())
    assert {e["session_id"] for e in state["transcripts"].values()} == {t.session_id for t in sessions}


# ============================================================================ the observed 2.1.328 background-agent sequence


def test_background_agent_hook_sequence_as_observed_in_2_1_328(session, runner):
    """docs/claude-code-observed.md: Stop(P1) -> SubagentStop -> Stop(P2 notification) -> SessionEnd,
    with the final line of each firing usually not yet on disk."""
    from transcript_factory import subagent_stop_event

    p1 = session.prompt("delegate counting")
    call = tool_use("Agent", {"description": "count files", "prompt": "Count the files.", "subagent_type": "general-purpose"})
    session.respond(text("Delegating."), call)
    agent = session.subagent("a7f1d58d081c7039f", call["id"], description="count files")
    session.tool_results(
        (call["id"], [text("Async agent launched successfully.\nagentId: a7f1d58d081c7039f (internal ID)")]),
        tool_use_result={
            "isAsync": True,
            "status": "async_launched",
            "agentId": agent.agent_id,
            "description": "count files",
            "prompt": "Count the files.",
            "outputFile": "/tmp/a.output",
        },
    )
    agent.agent_prompt("Count the files.")
    ls = tool_use("Bash", {"command": "ls | wc -l"})
    agent.respond(text("Counting."), ls, out_tokens=12)
    # Stop #1: "Launched; waiting." is not on disk yet
    runner.run(stop_event(session, "Launched; waiting.", prompt_id=p1["promptId"]))
    session.respond(text("Launched; waiting."))
    session.stop_hook_summary()
    agent.tool_results((ls["id"], "3"))
    # SubagentStop: the agent's final line lands during the hook run; the next firing sees it
    runner.run(subagent_stop_event(session, agent, last_assistant_message="There are 3 files."))
    agent.respond(text("There are 3 files."), out_tokens=7)
    # Stop #2 (notification turn P2): the file still ends with turn one
    runner.run(stop_event(session, "The subagent reported back: 3 files.", prompt_id="p2-not-on-disk"))
    note = session.task_notification(agent.agent_id, 'Agent "count files" finished', "There are 3 files.", tool_use_id=call["id"])
    session.respond(text("The subagent reported back: 3 files."))
    session.stop_hook_summary()
    session.end_noise()
    runner.run(session_end_event(session))

    turns = latest_turns(runner)
    assert [t["trace"]["metadata"]["turn_kind"] for t in turns] == ["prompt", "task-notification"]
    first, second = turns
    assert root(first)["output"] == "Launched; waiting."
    assert root(second)["output"] == "The subagent reported back: 3 files."
    assert second["trace"]["metadata"]["prompt_id"] == note["promptId"]
    (agent_obs,) = observations(first, "agent")
    assert agent_obs["output"] == "There are 3 files."
    assert len([o for o in first["observations"] if o["parent_id"] == agent_obs["id"] and o["type"] == "generation"]) == 2
    # the notification's companion line (promptId P2) is not part of turn one
    assert "tools-used-before-summary" not in json.dumps(first)
    # every version of a turn went out under one trace id
    for pid, recs in turns_by_prompt(runner.queue()).items():
        assert len({r["trace"]["id"] for r in recs}) == 1, pid
    assert len(turns_by_prompt(runner.queue())) == 2
