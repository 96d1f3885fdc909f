"""Issue 9, items 11 and 12: when a turn ends, and text typed while Claude was working.

11. A turn ends at its last assistant or tool line (Claude Code's `turn_duration` line where it
    writes one). Local commands typed after the answer (`/exit`, `/cost`, `/model`, `!cmd`) stay
    visible as events of that turn but never stretch it: Langfuse's trace latency spans every
    observation of the trace, so such an event sits at the turn's end and keeps its own time in
    metadata `at`. Insights' active time follows.
12. Text sent while Claude was working reaches the transcript as a `queued_command` attachment
    (observed with the real 2.1.328 CLI) and joins the running turn: it is part of the trace's input
    (what a user searching their sessions for what they typed finds) and an event at the time it
    was typed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from claude_code_langfuse import insights
from claude_code_langfuse.transcript import iter_rows
from samples import SAMPLES
from test_turns import AGT_SESSION, LADDER, all_records, sample_copy, turn_records
from transcript_factory import (
    Clock,
    HookRunner,
    Transcript,
    image,
    observations,
    queue_enqueue,
    queued_command,
    root,
    session_end_event,
    stop_event,
    text,
    tool_use,
    transcript_timestamps,
)

needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"sample transcripts folder {SAMPLES} absent")


@pytest.fixture
def session(tmp_path):
    path = tmp_path / "projects" / "-home-dev-proj" / "0f0e0d0c-1111-4222-8333-944445555666.jsonl"
    return Transcript(str(path), session_id="0f0e0d0c-1111-4222-8333-944445555666", clock=Clock(step_ms=1000))


def events(record, name=None):
    return [o for o in observations(record, "event") if name is None or o["name"] == name]


def latency_end(record) -> str:
    """The latest time of any observation: where Langfuse's trace latency ends."""
    return max(max(o["start"], o["end"]) for o in record["observations"])


def only_turns(runner: HookRunner) -> list[dict]:
    return sorted((r for r in runner.latest().values() if r["kind"] == "turn"), key=lambda r: r["trace"]["metadata"]["turn_number"])


# ============================================================================ 11. turn end


@needs_samples
def test_exit_typed_after_the_answer_does_not_stretch_the_turn_real_sample(tmp_path):
    # 2.0.28: the last answer at 19:48:38.356, `/exit` typed at 19:48:50 (caveat line 19:48:50.228)
    path = sample_copy(tmp_path, AGT_SESSION)
    first, second = turn_records(all_records(tmp_path, path))
    assert (root(first)["start"], root(first)["end"]) == ("2025-12-09T19:47:42.930Z", "2025-12-09T19:48:14.040Z")
    r = root(second)
    assert (r["start"], r["end"]) == ("2025-12-09T19:48:17.460Z", "2025-12-09T19:48:38.356Z")
    assert latency_end(second) == "2025-12-09T19:48:38.356Z"
    # the local command is still there, at the turn's end, with its own time
    (exit_cmd,) = events(second, "local-command")
    assert "/exit" in exit_cmd["input"]
    assert exit_cmd["start"] == exit_cmd["end"] == r["end"]
    assert exit_cmd["metadata"]["at"] == "2025-12-09T19:48:50.204Z"
    (stdout,) = events(second, "local-command-output")
    assert "Goodbye!" in stdout["input"] and stdout["metadata"]["at"] == "2025-12-09T19:48:50.204Z"


@needs_samples
def test_turn_duration_line_ends_the_turn_and_its_figure_is_kept_real_sample(tmp_path):
    # 2.1.280: every turn closes with stop_hook_summary then turn_duration (durationMs = Claude Code's own figure)
    path = sample_copy(tmp_path, LADDER)
    got = [(root(r)["end"], root(r)["metadata"].get("turn_duration_ms")) for r in turn_records(all_records(tmp_path, path))]
    assert got == [
        ("2026-09-22T21:00:48.873Z", 10177),
        ("2026-09-22T21:01:32.065Z", 5838),
        ("2026-09-22T21:02:43.820Z", 12594),
        ("2026-09-22T21:03:47.791Z", 23595),  # the Stop-hook ladder: one turn_duration for the whole turn
    ]


def _answered_turn(session: Transcript, question: str, answer: str, close: bool = True) -> tuple[dict, dict]:
    """prompt, a Bash call, the answer; returns (prompt row, last assistant line)."""
    p = session.prompt(question)
    call = tool_use("Bash", {"command": "ls"})
    session.respond(text("Checking."), call)
    session.tool_results((call["id"], "a b"))
    (last,) = session.respond(text(answer))
    return p, last


def test_local_commands_minutes_after_the_answer_are_events_not_latency(tmp_path, session):
    p, last = _answered_turn(session, "list the files", "There are two files.")
    session.stop_hook_summary()
    td = session.turn_duration(ms=4321)
    session.end_noise()
    session.clock.tick(10 * 60 * 1000)  # the user comes back ten minutes later
    session.local_command("/cost", "Total cost: $0.01")
    cost_line = session.rows[-2]
    assert "/cost" in cost_line["message"]["content"]
    model_line = session.system("local_command", content="<command-name>/model</command-name>\n<command-args>opus</command-args>")
    session.clock.tick(60 * 1000)
    session.simple_turn("now count them", "Two.")
    runner = HookRunner(str(tmp_path / "state"))
    runner.run(stop_event(session, "Two."))
    first, second = only_turns(runner)
    r = root(first)
    assert (r["start"], r["end"]) == (p["timestamp"], td["timestamp"])
    assert last["timestamp"] < td["timestamp"]
    assert r["metadata"]["turn_duration_ms"] == 4321
    assert latency_end(first) == td["timestamp"]  # Langfuse's trace latency ends with the turn too
    cmds = events(first, "local-command")
    assert len(cmds) == 2 and all(o["start"] == o["end"] == r["end"] for o in cmds)
    assert {o["metadata"]["at"] for o in cmds} == {cost_line["timestamp"], model_line["timestamp"]}
    assert all(o["metadata"]["at"] > td["timestamp"] for o in cmds)
    (output,) = events(first, "local-command-output")
    assert output["start"] == r["end"] and "Total cost" in output["input"]
    # the next turn starts at its own prompt, untouched
    assert root(second)["start"] > model_line["timestamp"]


def test_without_turn_duration_the_last_answer_ends_the_turn(tmp_path, session):
    # `-p` mode writes no turn_duration; a `!cmd` and a /cost typed later are not Claude's time
    p, last = _answered_turn(session, "list the files", "There are two files.")
    session.stop_hook_summary()
    session.clock.tick(90 * 1000)
    bash_in = session._user("<bash-input>git status</bash-input>")
    session._user("<bash-stdout>clean</bash-stdout><bash-stderr></bash-stderr>")
    session.local_command("/cost", "Total cost: $0.01")
    runner = HookRunner(str(tmp_path / "state"))
    runner.run(session_end_event(session))
    (rec,) = only_turns(runner)
    r = root(rec)
    assert (r["start"], r["end"]) == (p["timestamp"], last["timestamp"])
    assert "turn_duration_ms" not in r["metadata"]
    assert latency_end(rec) == last["timestamp"]
    (bash,) = [o for o in events(rec, "bash-mode") if "git status" in o["input"]]
    assert bash["start"] == r["end"] and bash["metadata"]["at"] == bash_in["timestamp"]


def test_an_interrupt_or_an_api_error_is_still_the_turns_time(tmp_path, session):
    p = session.prompt("write a long essay")
    session.respond(text("Once upon"))
    session.clock.tick(5000)
    stop = session.interrupt()
    session.clock.tick(60 * 1000)
    session.local_command("/cost", "Total cost: $0.01")
    q = session.prompt("try again")
    session.api_error_retry(1)
    retry = session.api_error_retry(2)
    failed = session.api_error_message()
    session.clock.tick(30 * 1000)
    session.local_command("/exit", "Goodbye!")
    runner = HookRunner(str(tmp_path / "state"))
    runner.run(session_end_event(session))
    first, second = only_turns(runner)
    assert (root(first)["start"], root(first)["end"]) == (p["timestamp"], stop["timestamp"])
    assert (root(second)["start"], root(second)["end"]) == (q["timestamp"], failed["timestamp"])
    assert retry["timestamp"] < failed["timestamp"]
    assert latency_end(first) == stop["timestamp"] and latency_end(second) == failed["timestamp"]


def test_the_turn_end_does_not_move_when_exit_is_typed_at_session_end(tmp_path, session):
    p, last = _answered_turn(session, "list the files", "There are two files.")
    runner = HookRunner(str(tmp_path / "state"))
    (at_stop,) = runner.run(stop_event(session, "There are two files."))
    assert root(at_stop)["end"] == last["timestamp"]
    session.stop_hook_summary()
    td = session.turn_duration()
    session.clock.tick(120 * 1000)
    session.local_command("/exit", "Goodbye!")
    runner.run(session_end_event(session))
    (rec,) = only_turns(runner)
    assert root(rec)["end"] == td["timestamp"] and latency_end(rec) == td["timestamp"]
    assert len(events(rec, "local-command")) == 1


def test_times_stay_deterministic_and_from_the_transcript(tmp_path, session):
    _answered_turn(session, "list the files", "There are two files.")
    session.stop_hook_summary()
    session.turn_duration()
    session.clock.tick(300 * 1000)
    session.local_command("/model", "Set model to opus")
    session.simple_turn("count them", "Two.")
    session.clock.tick(300 * 1000)
    session.local_command("/exit", "Goodbye!")
    runs = []
    for name in ("a", "b"):
        runner = HookRunner(str(tmp_path / f"state-{name}"))
        runner.run(session_end_event(session))
        runs.append([json.dumps({k: v for k, v in r.items() if k != "queued_at"}, sort_keys=True) for r in runner.queue()])
    assert runs[0] and runs[0] == runs[1]
    stamps = transcript_timestamps(session.path)
    for rec in map(json.loads, runs[0]):
        r = root(rec)
        for o in rec["observations"]:
            assert o["start"] in stamps and o["end"] in stamps, o
            assert r["start"] <= o["start"] <= o["end"] <= r["end"], o


@needs_samples
def test_insights_active_time_leaves_out_idle_time(tmp_path, monkeypatch, capsys):
    project_dir = tmp_path / "home" / ".claude" / "projects" / "sample"
    project_dir.mkdir(parents=True)
    (project_dir / "a1b2c3d4-0000-4000-8000-000000000001.jsonl").symlink_to(SAMPLES / AGT_SESSION)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CC_LANGFUSE_CONFIG", str(tmp_path / "none.json"))
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    assert insights.main(["sessions", "--since", "2000-01-01", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["tables"][0]["rows"]
    # 19:47:42.930 -> 19:48:14.040 and 19:48:17.460 -> 19:48:38.356 (not to 19:48:50, when /exit was typed)
    assert row["turns"] == 2
    assert row["duration_s"] == pytest.approx(31.110 + 20.896)


# ============================================================================ 12. text typed while Claude works


def _turn_with_queued_text(session: Transcript, queued, **kw) -> tuple[dict, str, dict]:
    p = session.prompt("run the slow command")
    call = tool_use("Bash", {"command": "sleep 3; echo done"})
    session.respond(text("Working."), call)
    typed_at = queue_enqueue(session, queued if isinstance(queued, str) else "")
    session.clock.tick(2000)
    session.tool_results((call["id"], "done"))
    queued_command(session, queued, typed_at=typed_at, **kw)
    (last,) = session.respond(text("Done, and it is Tuesday."))
    session.stop_hook_summary()
    session.end_noise()
    return p, typed_at, last


@pytest.mark.parametrize("origin", [None, "human"])  # `-p`/SDK input has no origin; interactive sessions say human
def test_text_typed_while_claude_works_joins_the_turn(tmp_path, session, origin):
    p, typed_at, last = _turn_with_queued_text(session, "also tell me the date", origin=origin)
    runner = HookRunner(str(tmp_path / "state"))
    runner.run(stop_event(session, "Done, and it is Tuesday."))
    (rec,) = only_turns(runner)  # one turn, not two
    r = root(rec)
    assert rec["trace"]["name"] == "run the slow command"
    assert r["input"].startswith("run the slow command") and "also tell me the date" in r["input"]
    (ev,) = events(rec, "queued-prompt")
    assert ev["input"] == "also tell me the date"
    assert ev["start"] == ev["end"] == typed_at and r["start"] < typed_at < r["end"] == last["timestamp"]
    assert ev["metadata"]["command_mode"] == "prompt"
    # the answer that addressed it is in the same trace
    assert len(observations(rec, "generation")) == 2


def test_a_long_queued_text_is_read_although_its_line_is_big(tmp_path, session):
    long_text = "please also handle this case: " + "x" * 6000
    _turn_with_queued_text(session, long_text)
    offset = next(i for i, line in enumerate(open(session.path, "rb")) if b'"queued_command"' in line)
    offset = sum(len(line) for line in list(open(session.path, "rb"))[:offset])
    # read from the file's start (the line mid-buffer) and from the line itself (an incremental read)
    for start in (0, offset):
        with open(session.path, "rb") as f:
            big = [r for r in iter_rows(f, start) if r.type == "attachment" and r.data["attachment"]["type"] == "queued_command"]
        assert len(big) == 1 and big[0].start == offset and big[0].end - big[0].start > 4096, start
    runner = HookRunner(str(tmp_path / "state"))
    runner.run(stop_event(session, "Done, and it is Tuesday."))
    (rec,) = only_turns(runner)
    assert long_text in root(rec)["input"]


def test_a_queued_image_is_a_placeholder(tmp_path, session):
    _turn_with_queued_text(session, [text("match this"), image(b"\x89PNG" + b"0" * 100)], origin="human")
    runner = HookRunner(str(tmp_path / "state"))
    runner.run(stop_event(session, "Done, and it is Tuesday."))
    (rec,) = only_turns(runner)
    assert "match this\n[image: image/png, 104 bytes]" in root(rec)["input"]
    assert "base64" not in json.dumps(rec) and "iVBOR" not in json.dumps(rec)


def test_a_queued_task_notification_is_an_event_not_the_prompt(tmp_path, session):
    note = "<task-notification>\n<task-id>b1</task-id>\n<status>completed</status>\n</task-notification>"
    _turn_with_queued_text(session, note, mode="task-notification", origin="task-notification")
    runner = HookRunner(str(tmp_path / "state"))
    runner.run(stop_event(session, "Done, and it is Tuesday."))
    (rec,) = only_turns(runner)
    assert root(rec)["input"] == "run the slow command"
    (ev,) = events(rec, "queued-command")
    assert ev["input"] == note and ev["metadata"] == {"command_mode": "task-notification", "origin": "task-notification"}


# ============================================================================ 12, with the real CLI


def test_real_cli_text_sent_during_a_tool_call_joins_the_turn(tmp_path, claude_cli, claude_home, claude_project):
    """`claude -p --input-format stream-json`: a second message sent while a Bash call waits is
    absorbed into the running turn (queued_command attachment), not a turn of its own."""
    import signal
    import threading

    from fake_messages_api import FakeMessagesAPI, reply
    from fake_messages_api import text as api_text
    from fake_messages_api import tool_use as api_tool_use
    from fixtures_claude_cli import claude_env, find_transcript

    go = claude_project / "GO"  # the Bash call runs until the test creates it: the turn is busy till then
    script = [
        reply(api_text("Working."), api_tool_use("Bash", {"command": f"while [ ! -e {go} ]; do sleep 0.05; done; echo done"})),
        reply(api_text("Done, and it is Tuesday.")),
    ]

    def lines_of(path) -> list[dict]:
        out = []
        for line in path.read_text().splitlines() if path else []:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # a line still being written
        return out

    def wait_for(what, check) -> None:
        deadline = time.monotonic() + 60
        while not check():
            assert time.monotonic() < deadline, f"the CLI never got to: {what}"
            time.sleep(0.05)

    argv = [claude_cli, "-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose", "--allowedTools", "Bash"]
    with FakeMessagesAPI(script) as api:
        proc = subprocess.Popen(
            argv,
            cwd=str(claude_project),
            env=claude_env(claude_home, api.url),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        watchdog = threading.Timer(180, lambda: os.killpg(proc.pid, signal.SIGKILL))  # never hang the suite
        watchdog.start()
        try:

            def send(content: str) -> None:
                proc.stdin.write(json.dumps({"type": "user", "message": {"role": "user", "content": content}}) + "\n")
                proc.stdin.flush()

            send("run the slow command")
            session_id = ""
            for line in proc.stdout:  # the init line names the session
                session_id = json.loads(line).get("session_id") or ""
                if session_id:
                    break
            assert session_id
            wait_for("the Bash call", lambda: any(r.get("type") == "assistant" for r in lines_of(find_transcript(claude_home, session_id))))
            transcript = find_transcript(claude_home, session_id)
            send("also tell me the date")
            wait_for(
                "queueing the second message",
                lambda: any(r.get("operation") == "enqueue" and r.get("content") == "also tell me the date" for r in lines_of(transcript)),
            )
            go.touch()
            result = next((m for m in map(json.loads, proc.stdout) if m.get("type") == "result"), None)
            proc.stdin.close()
            proc.wait(timeout=60)
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert result and not result.get("is_error"), result
    assert len([r for r in api.requests if r["kind"] == "main"]) == 2  # absorbed: no request of its own
    assert any((r.get("attachment") or {}).get("type") == "queued_command" for r in lines_of(transcript))
    runner = HookRunner(str(tmp_path / "state"))
    runner.run({"session_id": session_id, "transcript_path": str(transcript), "cwd": str(claude_project), "hook_event_name": "SessionEnd"})
    (rec,) = only_turns(runner)
    r = root(rec)
    assert rec["trace"]["name"] == "run the slow command"
    assert r["input"].startswith("run the slow command") and "also tell me the date" in r["input"]
    (ev,) = events(rec, "queued-prompt")
    assert ev["input"] == "also tell me the date" and r["start"] <= ev["start"] <= r["end"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
