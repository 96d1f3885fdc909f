"""Regressions: defects found in an independent review of the hook (then one file, hooks/langfuse_hook.py), each reproduced
as a user would notice it (they failed on the reviewed code and pass since the fixes)."""

from __future__ import annotations

import json
import logging
import os
import sys

import pytest
from claude_code_langfuse import config, hook, worker
from claude_code_langfuse.commands import retry_dead_letters
from claude_code_langfuse.config import ensure_state_dir
from claude_code_langfuse.delivery import drain_queue
from claude_code_langfuse.files import FileLock, Paths
from claude_code_langfuse.plan import BadRecord, build_plan
from claude_code_langfuse.store import queue_read
from transcript_factory import (
    HookRunner,
    Transcript,
    capturing_logger,
    children,
    launch_background_agent,
    observations,
    session_end_event,
    stop_event,
    subagent_stop_event,
    text,
    tool_use,
)

HOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "hooks", "langfuse_hook.py")


def latest_turn(runner: HookRunner, key: str) -> dict:
    return runner.latest()[key]


# ------------------------------------------------------------------------------------------------
# 1. A background agent that finishes after the user moved on loses its final answer when
#    SubagentStop runs before the agent's last line is on disk (observed 3 of 4 times, 2.1.328).


def test_late_flushed_final_answer_of_a_background_agent_reaches_langfuse(session, runner):
    call, agent, fetch = launch_background_agent(session)
    agent_id = agent.agent_id
    session.respond(text("The researcher is running."))
    session.turn_duration()
    runner.run(stop_event(session, "The researcher is running."))
    first_key = runner.queue()[0]["key"]

    # the user keeps working while the agent runs
    session.simple_turn("unrelated question", "unrelated answer")
    runner.run(stop_event(session, "unrelated answer"))

    agent.tool_results((fetch["id"], "100 requests per minute"))
    # SubagentStop fires before the agent's final line reaches the disk ...
    runner.run(subagent_stop_event(session, agent, last_assistant_message="The limit is 100 rpm."))
    # ... which lands a few ms later, followed by the notification turn and the session's end
    agent.respond(text("The limit is 100 rpm."), out_tokens=30)
    session.task_notification(agent_id, 'Agent "Research API" completed', tool_use_id=call["id"])
    session.respond(text("The researcher found: 100 rpm."))
    session.turn_duration()
    runner.run(stop_event(session, "The researcher found: 100 rpm."))
    runner.run(session_end_event(session))

    launching = latest_turn(runner, first_key)
    (agent_obs,) = observations(launching, "agent")
    assert agent_obs["output"] == "The limit is 100 rpm.", "the agent's final answer never reached Langfuse"
    assert len(children(launching, agent_obs["id"], "generation")) == 2, "the agent's last generation (and its tokens) is missing"


# ------------------------------------------------------------------------------------------------
# 2. Turning tracing off (TRACE_TO_LANGFUSE=false, e.g. for a sensitive stretch of a session) does
#    not keep those turns private: the cursor stays put, so re-enabling uploads all of them.


class _Stdin:
    def __init__(self, data: bytes):
        import io

        self.buffer = io.BytesIO(data)


def _hook_main(monkeypatch, tmp_path, event: dict, **env) -> None:
    monkeypatch.setenv("CC_LANGFUSE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("CC_LANGFUSE_CONFIG", str(tmp_path / "no-config.json"))
    for name in ("TRACE_TO_LANGFUSE", "CC_LANGFUSE_PUBLIC_KEY", "CC_LANGFUSE_SECRET_KEY", "LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(hook, "wake_worker", lambda *a, **k: None)
    monkeypatch.setattr(config, "_LOGGER", logging.getLogger("cc-langfuse-review"))
    monkeypatch.setattr(sys, "stdin", _Stdin(json.dumps(event).encode()))
    hook.hook_main()
    # what the detached worker does next, in this process: the event's own settings travel with it
    worker.process_inbox(Paths(str(tmp_path / "state")), config._LOGGER, final=True)


def test_turns_made_while_tracing_was_off_are_never_sent(session, tmp_path, monkeypatch):
    session.simple_turn("paste of the production database dump", "I looked at the dump.")
    _hook_main(monkeypatch, tmp_path, stop_event(session, "I looked at the dump."), TRACE_TO_LANGFUSE="false")
    session.simple_turn("tracing back on: what is 2+2?", "4")
    _hook_main(monkeypatch, tmp_path, stop_event(session, "4"), TRACE_TO_LANGFUSE="true")
    _hook_main(monkeypatch, tmp_path, session_end_event(session), TRACE_TO_LANGFUSE="true")
    queued = [e.record for e in queue_read(Paths(str(tmp_path / "state")).queue) if e.record]
    names = {r["trace"]["name"] for r in queued}
    assert "paste of the production database dump" not in names, "a turn made while TRACE_TO_LANGFUSE=false was queued for Langfuse"
    assert "tracing back on: what is 2+2?" in names


# ------------------------------------------------------------------------------------------------
# 3. Redaction misses observation names: the root span is named after the prompt's first line and
#    a subagent span after the Agent call's description, both sent verbatim.

SECRET = "sk-ant-api03-" + "Q7vX2kLm9pR4tY8wZ1nB5cD3fG6hJ0aS"


def test_secret_in_the_first_prompt_line_is_not_sent_in_any_name(session, runner):
    session.simple_turn(f"set ANTHROPIC_API_KEY={SECRET} in the CI settings", "Done.")
    runner.run(stop_event(session, "Done."))
    (record,) = runner.latest().values()
    assert SECRET not in record["trace"]["name"]  # the trace name is redacted ...
    leaked = [o["type"] + " " + o["name"] for o in record["observations"] if SECRET in o["name"]]
    assert not leaked, f"secret sent in observation names: {leaked}"  # ... the root span's name is not


def test_secret_in_an_agent_description_is_not_sent_in_the_agent_name(session, runner):
    session.prompt("check the deploy token")
    call = tool_use("Agent", {"description": f"Try token {SECRET}", "prompt": "Check it.", "subagent_type": "general-purpose"})
    session.respond(text("Delegating."), call)
    agent = session.subagent("b81c7d2e9f0a1b2c3", call["id"], description=f"Try token {SECRET}")
    agent.agent_prompt("Check it.")
    agent.respond(text("It works."))
    session.tool_results(
        (call["id"], [text("It works.\nagentId: b81c7d2e9f0a1b2c3")]),
        tool_use_result={"status": "completed", "agentId": "b81c7d2e9f0a1b2c3"},
    )
    session.respond(text("The token works."))
    session.turn_duration()
    runner.run(stop_event(session, "The token works."))
    (record,) = runner.latest().values()
    assert SECRET not in json.dumps(record), "secret sent in: " + ", ".join(
        o["type"] + " " + o["name"] for o in record["observations"] if SECRET in json.dumps(o)
    )


# ------------------------------------------------------------------------------------------------
# 4. A failed tool's status message is cut to 500 characters before redaction: a secret that
#    straddles the cut no longer matches its rule and its first part is sent in clear.


def test_secret_cut_by_the_status_message_limit_is_still_redacted(session, runner):
    password = "hunter2-Zq8Lm3Vx7Rt1Np5Kw9Bd"
    prefix = "Exit code 1\n" + "x" * (500 - len("Exit code 1\n") - len('DB_PASSWORD="') - 12)
    error_output = prefix + f'DB_PASSWORD="{password}"\nconnection refused'
    assert error_output.index(password) + 12 == 500  # the cut falls inside the password
    session.prompt("connect to the database")
    call = tool_use("Bash", {"command": "./connect.sh"})
    session.respond(text("Connecting."), call)
    session.tool_results((call["id"], error_output, True), tool_use_result="Error: " + error_output)
    session.respond(text("It failed."))
    session.turn_duration()
    runner.run(stop_event(session, "It failed."))
    (record,) = runner.latest().values()
    (bash,) = observations(record, "tool")
    assert password not in json.dumps(bash["output"])  # the output itself is redacted ...
    assert password[:12] not in bash["status_message"], f"partial secret sent: {bash['status_message'][-40:]!r}"


# ------------------------------------------------------------------------------------------------
# 5. A base URL with credentials (a reverse proxy with basic auth) is written verbatim into the
#    log and the sender status file whenever the server is unreachable or refuses the keys.


def test_password_in_the_base_url_stays_out_of_log_and_status(session, runner, tmp_path):
    session.simple_turn("hello", "Hi!")
    runner.run(stop_event(session, "Hi!"))
    settings = runner.settings._replace(public_key="pk-lf-x", secret_key="sk-lf-y", base_url="http://langfuse:Pr0xyPassw0rd@127.0.0.1:9")
    log, lines = capturing_logger("cc-langfuse-review-drain")
    summary = drain_queue(settings, log)
    assert summary.stopped_by == "retry"
    status = open(runner.paths.sender_status, encoding="utf-8").read()
    assert "Pr0xyPassw0rd" not in "\n".join(lines), "password written to the log"
    assert "Pr0xyPassw0rd" not in status, "password written to langfuse_sender.json"


# ------------------------------------------------------------------------------------------------
# 6. `drain --retry-dead` appends an old dead-lettered version of a turn behind a newer version of
#    the same turn: the sender sends the old one and drops the newer one from the queue unsent.


def _quiet_log():
    log = logging.getLogger("cc-langfuse-review-quiet")
    log.propagate = False
    return log


def test_retry_dead_does_not_replace_a_newer_version_of_the_same_turn(session, runner, langfuse_standin):
    session.prompt("write the release notes")
    session.respond(text("Draft one."))
    runner.run(stop_event(session, "Draft one."))
    settings = runner.settings._replace(
        public_key=langfuse_standin.public_key, secret_key=langfuse_standin.secret_key, base_url=langfuse_standin.base_url
    )
    langfuse_standin.script([400])  # e.g. a proxy rule that was fixed later
    assert drain_queue(settings, _quiet_log()).dead == 1
    # the same turn goes on (Stop hook feedback) and is queued again, now with the final answer
    session.stop_feedback("Add the migration notes.")
    session.respond(text("Final notes with migrations."))
    session.turn_duration()
    runner.run(stop_event(session, "Final notes with migrations.", stop_hook_active=True))
    # the dead version is superseded by the newer one waiting in the queue: dropped, not re-queued
    assert retry_dead_letters(runner.paths) == 0
    assert not runner.paths.dead or not open(runner.paths.dead).read().strip()
    drain_queue(settings, _quiet_log())
    roots = [o for o in langfuse_standin.observations() if o.parent_id is None]
    assert roots, "nothing was sent"
    assert roots[-1].output == "Final notes with migrations.", (
        f"Langfuse ends with {roots[-1].output!r}; queue left: {len(runner.queue())} record(s)"
    )


# ------------------------------------------------------------------------------------------------
# 7. A resumed subagent (Task `resume: <agentId>`, 2.0.x-2.1.0: the same agent-<id>.jsonl keeps
#    growing) is attached twice to one turn: duplicate observation ids make the sender declare the
#    whole turn malformed and dead-letter it.


def test_turn_that_resumes_its_own_subagent_can_be_sent(tmp_path, runner):
    t = Transcript(str(tmp_path / "projects" / "-p" / "7f2abd2d-7cfc-4447-9ddd-3ca8d14e02e9.jsonl"), version="2.0.64")
    agent_id = "ab12cd34"
    agent = t.flat_agent(agent_id)
    t.prompt("fix the e2e tests with a helper agent")
    launch = tool_use("Task", {"description": "Fix e2e", "prompt": "Fix the e2e tests.", "subagent_type": "general-purpose"})
    t.respond(text("Delegating."), launch)
    agent.agent_prompt("Fix the e2e tests.")
    agent.respond(text("Fixed two of three."))
    t.tool_results(
        (launch["id"], f"Fixed two of three.\nagentId: {agent_id}"), tool_use_result={"agentId": agent_id, "status": "completed"}
    )
    resume = tool_use(
        "Task", {"description": "Finish e2e", "prompt": "Fix the last one.", "resume": agent_id, "subagent_type": "general-purpose"}
    )
    t.respond(text("Resuming it."), resume)
    agent.agent_prompt("Fix the last one.")
    agent.respond(text("All three pass."))
    t.tool_results((resume["id"], f"All three pass.\nagentId: {agent_id}"), tool_use_result={"agentId": agent_id, "status": "completed"})
    t.respond(text("All e2e tests pass now."))
    runner.run(session_end_event(t))
    (record,) = runner.latest().values()
    try:
        build_plan(record)
    except BadRecord as e:
        pytest.fail(f"the sender dead-letters this turn: {e}")


# ------------------------------------------------------------------------------------------------
# A task-notification turn whose companion line comes first: re-reading the open turn from that
# line must give the same record, not a second version without the companion.


def test_rereading_a_turn_that_starts_with_its_companion_line_changes_nothing(session, runner):
    session.simple_turn("start a background job", "started")
    runner.run(stop_event(session, "started"))
    session.task_notification("a1b2c3d4e5f6a7b8c", 'Agent "job" completed')
    session.respond(text("The job finished."))
    first = runner.run(stop_event(session, "The job finished."))
    assert [r["trace"]["name"] for r in first if r["trace"]["name"].startswith("Task notification")]
    again = runner.run(stop_event(session, "The job finished."))
    assert again == [], f"the open turn was queued again on a re-read: {[r['trace']['name'] for r in again]}"


# ------------------------------------------------------------------------------------------------
# The hook never waits long on a queue a sender is rewriting: it leaves its cursor and the next run
# queues the same turns.


def test_busy_queue_makes_the_hook_skip_not_wait_and_nothing_is_lost(session, runner):
    session.simple_turn("one", "answer one")
    lock = FileLock(runner.paths.queue_lock, timeout=0)
    ensure_state_dir(runner.paths.dir)
    assert lock.acquire(blocking=False)  # a sender in the middle of a long rewrite
    try:
        assert runner.run(stop_event(session, "answer one")) == []
        assert any("queue was busy" in line for line in runner.logs)
        assert runner.entry(session).get("offset", 0) == 0  # the cursor did not move
    finally:
        lock.release()
    [record] = runner.run(stop_event(session, "answer one"))
    assert record["trace"]["name"] == "one"
