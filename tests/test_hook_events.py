"""Hook events beyond Stop/SubagentStop/SessionEnd (issue 11, capture): PermissionRequest,
PostToolUse, PostToolUseFailure, StopFailure, SessionStart, SubagentStart.

The hook records each as a small fact (constant work, no tool_response, no tool input); the worker
files the facts per session without reading the transcript and merges them into the turns it builds
from the transcript: permission decision and wait on tool observations, the tool's own run time,
an API-failed turn closed at once as ERROR, the session's start source, an agent's real start. The
transcript stays the source of truth: without these events the same traces come out, minus these
details.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest
from claude_code_langfuse import facts
from claude_code_langfuse.files import Paths
from claude_code_langfuse.inbox import BadEvent, accept_event, input_digest
from transcript_factory import (
    HookRunner,
    Transcript,
    children,
    hook_process_env,
    launch_background_agent,
    observations,
    root,
    session_end_event,
    stop_event,
    text,
    tool_use,
    wait_for_worker,
)

HOOK = str(pathlib.Path(__file__).resolve().parent.parent / "hooks" / "langfuse_hook.py")


@pytest.fixture
def session(tmp_path):
    return Transcript(str(tmp_path / "home" / ".claude" / "projects" / "-home-dev-proj" / "0d7b3a1e-7c55-4d55-9a39-3b5f1b2f0c11.jsonl"))


@pytest.fixture
def runner(tmp_path):
    return HookRunner(str(tmp_path / "state"))


def epoch(iso: str, plus_ms: int = 0) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() + plus_ms / 1000


def fact(t: Transcript, name: str, at: float, **fields) -> dict:
    """A fact event as the hook hands it to the worker (accept_event's output), its time set."""
    raw = {"hook_event_name": name, "session_id": t.session_id, "transcript_path": t.path, "cwd": t.cwd, **fields}
    out = accept_event(json.dumps(raw).encode())
    out["fact_at"] = at
    return out


def tool_result_line(t: Transcript, call: dict, content: str, is_error: bool = False, **line_fields) -> dict:
    block = {"tool_use_id": call["id"], "type": "tool_result", "content": content, "is_error": is_error}
    return t._user([block], sourceToolAssistantUUID=t.last_uuid, **line_fields)


def tool_obs(record: dict, name: str) -> dict:
    [ob] = [o for o in observations(record, "tool") if o["name"] == name]
    return ob


# ---------------------------------------------------------------------------- the hook side


@pytest.mark.parametrize(
    "name,fields",
    [
        ("PermissionRequest", {"tool_name": "Write", "tool_input": {"file_path": "/p/f.txt", "content": "SECRET-BODY" * 1000}}),
        (
            "PostToolUse",
            {"tool_name": "Write", "tool_use_id": "toolu_1", "tool_response": {"originalFile": "SECRET-BODY" * 1000}, "duration_ms": 37},
        ),
        (
            "PostToolUseFailure",
            {
                "tool_name": "Bash",
                "tool_use_id": "toolu_2",
                "error": "Exit code 3\n" + "x" * 5000,
                "is_interrupt": False,
                "duration_ms": 29,
            },
        ),
        ("SubagentStart", {"agent_id": "a10c", "agent_type": "general-purpose"}),
        ("SessionStart", {"source": "resume", "model": "claude-opus-5-5"}),
        ("StopFailure", {"error": "server_error", "last_assistant_message": "API Error: 529 Overloaded."}),
    ],
)
def test_each_new_event_becomes_a_small_fact_without_bodies(session, name, fields):
    raw = {"hook_event_name": name, "session_id": session.session_id, "transcript_path": session.path, "cwd": session.cwd, **fields}
    out = accept_event(json.dumps(raw).encode())
    assert out["hook_event_name"] == name and out["session_id"] == session.session_id and isinstance(out["fact_at"], float)
    dumped = json.dumps(out)
    assert "SECRET-BODY" not in dumped  # neither a Write's content nor a tool's response reaches the inbox
    assert len(dumped) < 2000  # bounded whatever the payload's size
    if name == "PermissionRequest":
        assert out["input_digest"] == input_digest(fields["tool_input"])
    if name.startswith("PostToolUse"):
        assert out["duration_ms"] == fields["duration_ms"] and out["tool_use_id"] == fields["tool_use_id"]


@pytest.mark.parametrize("name", ["PostToolUse", "PostToolUseFailure", "SubagentStart", "PermissionRequest"])
def test_a_fact_without_its_key_or_session_is_refused(session, name):
    with pytest.raises(BadEvent):
        accept_event(json.dumps({"hook_event_name": name, "session_id": session.session_id}).encode())
    if name != "PermissionRequest":
        with pytest.raises(BadEvent):  # no tool_use_id / agent_id
            accept_event(json.dumps({"hook_event_name": name, "session_id": "s", "transcript_path": "/t.jsonl"}).encode())


def test_a_fact_event_through_the_real_hook_reads_no_transcript_and_queues_nothing(tmp_path, session):
    """PostToolUse fires on every tool call: the worker files it, it never reads the transcript (a
    FIFO as transcript would hang any reader) and queues nothing."""
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    event = {"hook_event_name": "PostToolUse", "session_id": "s-fifo", "transcript_path": str(fifo), "tool_name": "Bash"}
    event.update(tool_use_id="toolu_x", duration_ms=12, tool_response={"stdout": "big" * 10000})
    proc = subprocess.run(
        [sys.executable, "-I", HOOK], input=json.dumps(event).encode(), env=hook_process_env(tmp_path), capture_output=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout == b"" and proc.stderr == b""
    wait_for_worker(tmp_path / "state")
    data = facts.load(Paths(str(tmp_path / "state")), "s-fifo")
    assert data["tools"]["toolu_x"]["duration_ms"] == 12 and "big" not in json.dumps(data)
    assert not (tmp_path / "state" / "pending_traces.jsonl").exists() or (tmp_path / "state" / "pending_traces.jsonl").read_bytes() == b""
    assert os.listdir(tmp_path / "state" / "inbox") == []


# ---------------------------------------------------------------------------- permissions


def denied_in_print_mode(t: Transcript, runner: HookRunner, with_facts: bool = True) -> dict:
    """`-p`, Write not in --allowedTools (2.1.328 as observed): PreToolUse, PermissionRequest, the
    denial written as an error tool_result with permissionDecision reject/config, the answer, Stop."""
    t.prompt("write f.txt")
    call = tool_use("Write", {"file_path": "/home/dev/proj/f.txt", "content": "hello"})
    rows = t.respond(text("Writing."), call)
    if with_facts:
        runner.run(fact(t, "PermissionRequest", epoch(rows[-1]["timestamp"], 200), tool_name="Write", tool_input=call["input"]))
    tool_result_line(
        t,
        call,
        "Claude requested permissions to write to /home/dev/proj/f.txt, but you haven't granted it yet.",
        is_error=True,
        toolUseResult="Error: Claude requested permissions to write to /home/dev/proj/f.txt, but you haven't granted it yet.",
        toolDenialKind="user-rejected",
        permissionDecision={"decision": "reject", "source": "config", "reasonCode": "unknown"},
    )
    t.respond(text("I could not write the file."))
    return call


def test_a_denied_permission_is_a_warning_with_reason_decision_and_wait(session, runner):
    denied_in_print_mode(session, runner)
    [rec] = runner.run(stop_event(session, "I could not write the file."))
    ob = tool_obs(rec, "Write")
    assert ob["level"] == "WARNING"  # not ERROR: the tool did not fail, it was not allowed to run
    assert ob["status_message"].startswith("permission rejected by config: Claude requested permissions")
    meta = ob["metadata"]
    assert meta["permission"] == "rejected-by-config"
    assert meta["permission_decision"] == "reject" and meta["permission_source"] == "config" and meta["tool_denial_kind"] == "user-rejected"
    assert meta["permission_requested_at"]  # the PermissionRequest matched by tool and input
    assert meta["permission_wait_ms"] == 800  # request at tool_use + 200 ms, result 1 s after the tool_use line


def test_an_approved_permission_records_scope_wait_and_the_tools_own_duration(session, runner):
    session.prompt("write f.txt")
    call = tool_use("Write", {"file_path": "/home/dev/proj/f.txt", "content": "hello"})
    rows = session.respond(text("Writing."), call)
    asked = epoch(rows[-1]["timestamp"], 100)
    runner.run(fact(session, "PermissionRequest", asked, tool_name="Write", tool_input=call["input"]))
    session.clock.tick(8000)  # the user looks at the dialog for ~8 s
    result = tool_result_line(
        session,
        call,
        "File created successfully at: /home/dev/proj/f.txt",
        toolUseResult={"type": "create", "filePath": "/home/dev/proj/f.txt"},
        permissionDecision={"decision": "accept", "source": "user_temporary", "grantScope": "once", "reasonCode": "unknown"},
    )
    runner.run(fact(session, "PostToolUse", epoch(result["timestamp"]), tool_name="Write", tool_use_id=call["id"], duration_ms=143))
    session.respond(text("Done."))
    [rec] = runner.run(stop_event(session, "Done."))
    ob = tool_obs(rec, "Write")
    assert ob["level"] == "DEFAULT" and ob["status_message"] is None
    meta = ob["metadata"]
    assert (
        meta["permission"] == "approved-once" and meta["permission_grant_scope"] == "once" and meta["permission_source"] == "user_temporary"
    )
    assert meta["duration_ms"] == 143
    # from the dialog (request) to the result, minus the tool's own run time: 9 s - 0.1 s - 0.143 s
    assert meta["permission_wait_ms"] == 9000 - 100 - 143


@pytest.mark.parametrize(
    "decision,label",
    [
        ({"decision": "accept", "source": "config", "reasonType": "rule", "ruleSource": "cliArg"}, "allowed-by-rule"),
        ({"decision": "accept", "source": "config", "reasonType": "mode"}, "allowed-by-mode"),
        ({"decision": "accept", "source": "user_temporary", "grantScope": "session"}, "approved-for-session"),
    ],
)
def test_permission_labels_from_the_transcript_alone(session, runner, decision, label):
    """No hook facts at all (an older CLI, events not registered): the decision still comes from the
    transcript; a call allowed by config has no wait."""
    session.prompt("run it")
    call = tool_use("Bash", {"command": "true"})
    session.respond(call)
    tool_result_line(session, call, "", toolUseResult={"stdout": ""}, permissionDecision=decision)
    session.respond(text("ok"))
    [rec] = runner.run(stop_event(session, "ok"))
    meta = tool_obs(rec, "Bash")["metadata"]
    assert meta["permission"] == label
    assert ("permission_wait_ms" in meta) == label.startswith("approved")
    assert "duration_ms" not in meta and "permission_requested_at" not in meta


def test_a_rejected_tool_closes_the_turn_as_rejected_at_the_next_prompt(session, runner):
    """Interactive "No"/Esc: no Stop fires; the next prompt closes the turn, marked as rejected."""
    session.prompt("delete the logs")
    call = tool_use("Bash", {"command": "rm -rf logs"})
    session.respond(call)
    tool_result_line(
        session,
        call,
        "The user doesn't want to proceed with this tool use. The tool use was rejected (eg. if it was a file edit, the new_string was NOT written to the file). STOP what you are doing and wait for the user to tell you how to proceed.",
        is_error=True,
        toolUseResult="User rejected tool use",
        toolDenialKind="user-rejected",
        toolDenialBeforeRun=True,
    )
    session.interrupt(for_tool_use=True)
    session.simple_turn("never mind, list them", "logs/a.log")
    recs = runner.run(stop_event(session, "logs/a.log"))
    first = next(r for r in recs if r["trace"]["name"] == "delete the logs")
    r0 = root(first)
    assert r0["level"] == "WARNING" and r0["metadata"]["ended_by"] == "rejected" and r0["metadata"]["complete"] is True
    assert "rejected by the user (Bash)" in r0["status_message"]
    ob = tool_obs(first, "Bash")
    assert ob["level"] == "WARNING" and ob["metadata"]["permission"] == "rejected-by-user"
    assert ob["metadata"]["permission_wait_ms"] == 1000  # tool_use line to the rejection


def test_a_plain_interrupt_is_closed_at_session_end_as_interrupted(session, runner):
    session.prompt("count to a million")
    session.respond(text("1, 2, 3"))
    session.interrupt()
    [rec] = runner.run(session_end_event(session))
    r0 = root(rec)
    assert r0["level"] == "WARNING" and r0["metadata"]["ended_by"] == "interrupted" and r0["status_message"] == "interrupted by the user"


# ---------------------------------------------------------------------------- failed turns


def failed_turn(t: Transcript) -> dict:
    t.prompt("hello")
    t.api_error_retry(1)
    return t.api_error_message("API Error: 529 Overloaded. This is a server-side issue, usually temporary.")


def test_stop_failure_closes_the_turn_at_once_as_an_error_with_its_type(session, runner):
    msg = failed_turn(session)
    event = fact(
        session, "StopFailure", epoch(msg["timestamp"], 15), error="server_error", last_assistant_message="API Error: 529 Overloaded."
    )
    [rec] = runner.run(event)
    r0 = root(rec)
    assert r0["level"] == "ERROR" and r0["metadata"]["ended_by"] == "api-error" and r0["metadata"]["error_type"] == "server_error"
    assert r0["status_message"].startswith("API error (server_error): API Error: 529 Overloaded.")
    events = {o["name"]: o["level"] for o in observations(rec, "event")}
    assert events == {"api-error": "ERROR"} or sorted(o["level"] for o in observations(rec, "event")) == ["ERROR", "WARNING"]
    # the retry stays a warning, the error that ended the turn is the ERROR
    levels = sorted((o["metadata"].get("retryAttempt") is not None, o["level"]) for o in observations(rec, "event"))
    assert levels == [(False, "ERROR"), (True, "WARNING")]
    # resending: the same event again, then SessionEnd, change nothing
    assert runner.run(event) == []
    assert runner.run(session_end_event(session)) == []


def test_a_stop_failure_before_the_error_line_is_on_disk_waits_for_it(session, runner):
    session.prompt("hello")
    session.api_error_retry(1)
    event = fact(session, "StopFailure", epoch(session.clock.now(), 1500), error="rate_limit")
    assert runner.run(event, final=False) == [] and runner.last_outcome.done is False
    session.api_error_message("API Error: 429 rate limited")
    [rec] = runner.run(event, final=False)
    assert root(rec)["level"] == "ERROR" and root(rec)["metadata"]["error_type"] == "rate_limit"


def test_without_stop_failure_the_failed_turn_is_still_an_error_at_session_end(session, runner):
    """An older CLI, the hook not registered, or the -p shutdown that kills a Python StopFailure hook."""
    failed_turn(session)
    [rec] = runner.run(session_end_event(session))
    r0 = root(rec)
    assert r0["level"] == "ERROR" and r0["metadata"]["error_type"] == "api_error" and r0["metadata"]["complete"] is True


# ---------------------------------------------------------------------------- session start, subagents


def test_session_start_source_is_trace_metadata_of_the_turns_after_it(session, runner):
    runner.run(fact(session, "SessionStart", epoch(session.clock.now()), source="startup"))
    session.simple_turn("one", "answer one")
    runner.run(fact(session, "SessionStart", epoch(session.clock.now(), 500), source="resume"))
    session.simple_turn("two", "answer two")
    runner.run(stop_event(session, "answer two"))
    latest = runner.latest()
    by_name = {r["trace"]["name"]: r for r in latest.values()}
    assert by_name["one"]["trace"]["metadata"]["session_source"] == "startup"
    assert by_name["two"]["trace"]["metadata"]["session_source"] == "resume"


def test_a_subagent_gets_its_real_start_from_subagent_start(session, runner):
    call, agent, fetch = launch_background_agent(session)
    launched = session.rows[-3]["timestamp"]  # the Agent tool_use line
    runner.run(fact(session, "SubagentStart", epoch(launched, 50), agent_id=agent.agent_id, agent_type="general-purpose"))
    agent.tool_results((fetch["id"], "limits: 100/min"))
    agent.respond(text("100 per minute."))
    session.respond(text("The researcher runs in the background."))
    recs = runner.run(stop_event(session, "The researcher runs in the background."))
    [ag] = [o for r in recs for o in observations(r, "agent")]
    first_line = agent.rows[0]["timestamp"]
    assert ag["start"] < first_line and ag["metadata"]["started_at_launch"] is True
    assert ag["start"] == dt.datetime.fromtimestamp(epoch(launched, 50), dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# ---------------------------------------------------------------------------- determinism, late facts, missing facts


def bash_turn(t: Transcript, command: str = "make", answer: str = "Built.") -> tuple[dict, dict]:
    """A turn with one Bash call that ran: (the call, its tool_result line)."""
    t.prompt("run " + command)
    call = tool_use("Bash", {"command": command})
    t.respond(text("Running."), call)
    result = tool_result_line(t, call, "ok", toolUseResult={"stdout": "ok"})
    t.respond(text(answer))
    return call, result


@pytest.fixture
def reads(monkeypatch):
    """The byte ranges the worker reads from transcripts (collect's iter_rows calls)."""
    from claude_code_langfuse import collect

    seen: list[tuple] = []
    real = collect.iter_rows

    def spy(f, start=0, end=None, **kw):
        seen.append((start, end))
        return real(f, start, end, **kw)

    monkeypatch.setattr(collect, "iter_rows", spy)
    return seen


def test_a_late_fact_after_its_turn_was_queued_requeues_only_that_observation_at_once(session, runner, reads):
    call, result = bash_turn(session)
    [first] = runner.run(stop_event(session, "Built."))
    assert "duration_ms" not in tool_obs(first, "Bash")["metadata"]
    # the async PostToolUse hook wrote its news after the Stop's: the worker files it and queues the
    # tool observation again with it, without waiting for another transcript event
    late = fact(session, "PostToolUse", epoch(result["timestamp"]), tool_name="Bash", tool_use_id=call["id"], duration_ms=2500)
    reads.clear()
    [again] = runner.run(late)
    assert again["key"] == first["key"] and again.get("partial") is True
    assert [o["id"] for o in again["observations"]] == [tool_obs(first, "Bash")["id"]]
    assert again["observations"][0]["metadata"]["duration_ms"] == 2500
    assert again["observation_ids"] == [o["id"] for o in first["observations"]]  # nothing else changes, nothing doubles
    [span] = runner.entry(session)["spans"].values()
    assert reads == [(span["start"], span["end"])]  # that turn's bytes only
    [merged] = runner.latest().values()
    assert merged["observations"] == [tool_obs(again, "Bash") if o["type"] == "tool" else o for o in first["observations"]]
    # the same call reported again (a duplicate news file): filed once, nothing read, nothing queued
    path = facts.facts_path(runner.paths, session.session_id)
    before = pathlib.Path(path).read_bytes()
    reads.clear()
    assert runner.run(dict(late, fact_at=late["fact_at"] + 60, duration_ms=1)) == []
    assert pathlib.Path(path).read_bytes() == before and reads == []
    assert runner.run(late) == []
    # the next transcript events change nothing: the turn as queued already holds the fact
    assert runner.run(session_end_event(session)) == []
    assert runner.run(session_end_event(session)) == []


def test_late_facts_after_the_next_turn_reach_the_turn_behind_the_cursor(session, runner, reads):
    """The cursor moved past the turn (the next turn was read): its tool's run time and the
    permission request of its denied call still get onto it; the next turn is not touched."""
    call, result = bash_turn(session)
    write = denied_in_print_mode(session, runner, with_facts=False)
    [tool_use_line] = [r for r in session.rows if r["type"] == "assistant" and write in r["message"]["content"]]
    asked = epoch(tool_use_line["timestamp"], 200)
    session.simple_turn("and now?", "Nothing else.")
    queued = runner.run(stop_event(session, "Nothing else."))
    assert [r["trace"]["name"] for r in queued] == ["run make", "write f.txt", "and now?"]
    entry = runner.entry(session)
    assert entry["offset"] == entry["spans"][next(reversed(entry["spans"]))]["start"]  # only the last turn is open
    by_name = {r["trace"]["name"]: r for r in queued}

    reads.clear()
    [bash_again] = runner.run(
        fact(session, "PostToolUse", epoch(result["timestamp"]), tool_name="Bash", tool_use_id=call["id"], duration_ms=40)
    )
    assert bash_again["key"] == by_name["run make"]["key"] and bash_again["partial"] is True
    assert [o["name"] for o in bash_again["observations"]] == ["Bash"] and bash_again["observations"][0]["metadata"]["duration_ms"] == 40
    spans = {s["turn_number"]: s for s in runner.entry(session)["spans"].values()}
    assert reads == [(spans[1]["start"], spans[1]["end"])] and spans[1]["end"] <= spans[2]["start"]  # that turn's bytes only
    reads.clear()
    [write_again] = runner.run(fact(session, "PermissionRequest", asked, tool_name="Write", tool_input=write["input"]))
    assert reads == [(spans[2]["start"], spans[2]["end"])]  # found by time: the one turn that spans it
    assert write_again["key"] == by_name["write f.txt"]["key"] and [o["name"] for o in write_again["observations"]] == ["Write"]
    meta = write_again["observations"][0]["metadata"]
    assert meta["permission_wait_ms"] == 800 and meta["permission"] == "rejected-by-config"

    latest = {r["trace"]["name"]: r for r in runner.latest().values()}
    assert latest["and now?"] == by_name["and now?"]  # the open turn: untouched
    assert tool_obs(latest["run make"], "Bash")["metadata"]["duration_ms"] == 40
    assert tool_obs(latest["write f.txt"], "Write")["metadata"]["permission_requested_at"]
    assert [o["id"] for o in latest["write f.txt"]["observations"]] == [o["id"] for o in by_name["write f.txt"]["observations"]]
    # the next events (the session goes on, ends) re-queue none of it
    session.simple_turn("bye", "Bye.")
    assert {r["trace"]["name"] for r in runner.run(stop_event(session, "Bye."))} <= {"and now?", "bye"}
    assert runner.run(session_end_event(session)) == []
    assert not any(line.startswith(("WARNING", "ERROR")) for line in runner.logs)


def test_a_late_subagent_start_moves_the_queued_agent_to_its_launch(session, runner):
    call, agent, fetch = launch_background_agent(session)
    launched = session.rows[-3]["timestamp"]
    agent.tool_results((fetch["id"], "limits: 100/min"))
    agent.respond(text("100 per minute."))
    session.respond(text("The researcher runs in the background."))
    recs = runner.run(stop_event(session, "The researcher runs in the background."))
    [ag] = [o for r in recs for o in observations(r, "agent")]
    assert "started_at_launch" not in ag["metadata"]
    [again] = runner.run(fact(session, "SubagentStart", epoch(launched, 50), agent_id=agent.agent_id, agent_type="general-purpose"))
    assert [o["id"] for o in again["observations"]] == [ag["id"]]
    assert again["observations"][0]["metadata"]["started_at_launch"] is True and again["observations"][0]["start"] < ag["start"]


def test_a_late_fact_for_an_unknown_tool_use_id_is_ignored_and_logged_at_debug(session, runner, reads, monkeypatch):
    """Also the usual case of a fact that comes before its turn is read: neither the transcript nor
    the whole state is read for it (the session's small queued index says no queued turn holds it)."""
    from claude_code_langfuse import collect

    bash_turn(session)
    runner.run(stop_event(session, "Built."))
    queue = runner.queue()
    reads.clear()
    states: list = []
    monkeypatch.setattr(collect, "load_state", lambda paths: states.append(paths) or pytest.fail("the state was read"))
    unknown = fact(session, "PostToolUse", epoch(session.clock.now()), tool_name="Bash", tool_use_id="toolu_nobody", duration_ms=5)
    assert runner.run(unknown) == []
    assert reads == [] and states == [] and runner.queue() == queue
    [line] = [line for line in runner.logs if "toolu_nobody" in line]
    assert line.startswith("DEBUG") and "not read yet, or unknown" in line
    assert not any(line.startswith(("INFO", "WARNING", "ERROR")) for line in runner.logs)
    # filed all the same: if that call shows up in the transcript later, its turn gets it
    assert facts.load(runner.paths, session.session_id)["tools"]["toolu_nobody"]["duration_ms"] == 5


def test_a_fact_older_than_every_tracked_turn_is_left_out_and_said(session, runner, monkeypatch):
    from claude_code_langfuse import collect

    monkeypatch.setattr(collect, "MAX_SENT_TURNS", 2)
    call, result = bash_turn(session)
    for i in range(3):
        session.simple_turn(f"q{i}", f"a{i}")
    runner.run(stop_event(session, "a2"))
    assert len(runner.entry(session)["spans"]) == 2
    queue = runner.queue()
    assert (
        runner.run(fact(session, "PostToolUse", epoch(result["timestamp"]), tool_name="Bash", tool_use_id=call["id"], duration_ms=7)) == []
    )
    assert runner.queue() == queue
    [line] = [line for line in runner.logs if "still tracked" in line]
    assert line.startswith("INFO") and "stays as queued" in line


def test_a_late_session_start_reaches_the_turns_queued_after_it(session, runner):
    started = epoch(session.clock.now())
    session.simple_turn("one", "answer one")
    [first] = runner.run(stop_event(session, "answer one"))
    assert "session_source" not in first["trace"]["metadata"]
    [again] = runner.run(fact(session, "SessionStart", started, source="startup"))
    assert again["key"] == first["key"] and again["trace"]["metadata"]["session_source"] == "startup"
    assert [o["id"] for o in again["observations"]] == [root(first)["id"]]  # the root carries the trace metadata
    assert root(again)["metadata"]["session_source"] == "startup"


def test_a_late_fact_for_a_turn_queued_with_the_stops_answer_waits_for_the_next_read(session, runner):
    """The Stop's last_assistant_message stood in for an answer not on disk yet: reading the turn's
    old bytes again would lose that answer, so the fact is merged at the turn's next read."""
    session.prompt("build it")
    call = tool_use("Bash", {"command": "make"})
    session.respond(text("Running."), call)
    result = tool_result_line(session, call, "ok", toolUseResult={"stdout": "ok"})
    [first] = runner.run(stop_event(session, "All built."))  # the final answer is not on disk
    assert root(first)["metadata"]["output_source"] == "last_assistant_message"
    queue = runner.queue()
    late = fact(session, "PostToolUse", epoch(result["timestamp"]), tool_name="Bash", tool_use_id=call["id"], duration_ms=9)
    assert runner.run(late) == [] and runner.queue() == queue
    assert any(line.startswith("DEBUG") and "the Stop event's answer" in line for line in runner.logs)
    session.respond(text("All built."))
    [last] = runner.run(session_end_event(session))
    merged = runner.latest()[first["key"]]
    assert last["key"] == first["key"] and root(merged)["output"] == "All built."
    assert tool_obs(merged, "Bash")["metadata"]["duration_ms"] == 9


def test_the_same_traces_without_any_fact_and_with_a_corrupt_facts_file(tmp_path):
    """Point 3: the transcript alone is the source of truth. Same session written twice; one with
    facts, one without: the records differ only in the fact-derived metadata."""
    with_facts = HookRunner(str(tmp_path / "a"))
    without = HookRunner(str(tmp_path / "b"))
    t1 = Transcript(str(tmp_path / "1" / "s.jsonl"), session_id="same-session")
    t2 = Transcript(str(tmp_path / "2" / "s.jsonl"), session_id="same-session")
    denied_in_print_mode(t1, with_facts)
    denied_in_print_mode(t2, without, with_facts=False)
    [a] = with_facts.run(stop_event(t1, "I could not write the file."))
    # a facts file that is not JSON: ignored, never an error
    p = facts.facts_path(without.paths, "same-session")
    os.makedirs(os.path.dirname(p), exist_ok=True)
    pathlib.Path(p).write_text("{not json")
    [b] = without.run(stop_event(t2, "I could not write the file."))
    ta, tb = tool_obs(a, "Write"), tool_obs(b, "Write")
    assert tb["level"] == ta["level"] == "WARNING" and tb["metadata"]["permission"] == "rejected-by-config"
    assert set(ta["metadata"]) - set(tb["metadata"]) == {"permission_requested_at", "permission_wait_ms"}
    shape = lambda r: [(o["type"], o["name"], o["level"], o["status_message"]) for o in r["observations"]]  # noqa: E731
    assert shape(a) == shape(b)
    assert not any("Traceback" in line or line.startswith("ERROR") for line in without.logs)


def test_a_permission_request_for_another_input_is_not_matched(session, runner):
    session.prompt("write two files")
    call = tool_use("Write", {"file_path": "/home/dev/proj/a.txt", "content": "a"})
    rows = session.respond(call)
    runner.run(
        fact(
            session,
            "PermissionRequest",
            epoch(rows[-1]["timestamp"], 10),
            tool_name="Write",
            tool_input={"file_path": "/elsewhere", "content": "a"},
        )
    )
    tool_result_line(session, call, "ok", permissionDecision={"decision": "accept", "source": "config", "reasonType": "mode"})
    session.respond(text("done"))
    [rec] = runner.run(stop_event(session, "done"))
    assert "permission_requested_at" not in tool_obs(rec, "Write")["metadata"]
    assert children(rec, root(rec)["id"], "tool")


def test_old_facts_files_are_pruned_and_purge_removes_a_sessions_facts(tmp_path):
    """Facts hold tool names, errors and times per session: they do not pile up for ever, and
    `purge --session` leaves none of a purged session behind."""
    from claude_code_langfuse.config import ensure_state_dir
    from claude_code_langfuse.mute import drop_local

    paths = Paths(str(tmp_path / "state"))
    ensure_state_dir(paths.dir)
    folder = tmp_path / "state" / "facts"
    folder.mkdir()
    old, new = facts.facts_path(paths, "old-session"), facts.facts_path(paths, "new-session")
    for p in (old, facts.queued_path(paths, "old-session"), new, facts.queued_path(paths, "new-session")):
        pathlib.Path(p).write_text("{}")
    month_ago = time.time() - facts.FACTS_KEPT_S - 60
    for p in (old, facts.queued_path(paths, "old-session")):
        os.utime(p, (month_ago, month_ago))
    assert facts.prune(paths) == 2
    assert not os.path.exists(old) and os.path.exists(new) and os.path.exists(facts.queued_path(paths, "new-session"))
    drop_local(paths, "new-session")
    assert os.listdir(folder) == []
