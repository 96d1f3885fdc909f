"""Every observation is sent when it is final, and again only when it really changes (issue: every
Stop, SubagentStop and SessionEnd re-sent the whole open turn: 72 span sends for 37 observations;
Langfuse v4 keeps each copy as a row until ClickHouse merges them, so trace cost counted copies).

Two mechanisms, each tested here: the worker waits (bounded) for what Claude Code writes after the
Stop hooks (the hooks' summary, and in interactive sessions turn_duration) before it queues the
turn; and a turn that does change later is queued again with only the observations that changed,
which delivery merges with the versions still queued.
"""

from __future__ import annotations

import collections

from claude_code_langfuse.delivery import drain_queue, merge_versions
from transcript_factory import HookRunner, launch_background_agent, observations, root, session_end_event, stop_event, text, tool_use


def ids_queued(runner: HookRunner) -> collections.Counter:
    return collections.Counter(o["id"] for r in runner.queue() for o in r["observations"])


def stop_then_what_claude_code_writes_after(session, runner, answer: str) -> None:
    """The Stop as it happens: the worker reads the news before Claude Code has written the hooks'
    summary and turn_duration (final=False: its wait is not over), then again once they are there."""
    assert runner.run(stop_event(session, answer), final=False) == []
    assert runner.last_outcome.done is False, "the worker must wait for the turn to settle"
    session.stop_hook_summary()
    session.turn_duration()
    runner.run(stop_event(session, answer), final=False)
    assert runner.last_outcome.done is True


def test_an_eight_prompt_session_queues_every_observation_once(session, runner):
    for i in range(8):
        session.prompt(f"question {i}")
        call = tool_use("Bash", {"command": f"ls {i}"})
        session.respond(text("Let me check."), call)
        session.tool_results((call["id"], f"file{i}"))
        session.respond(text(f"answer {i}"))
        stop_then_what_claude_code_writes_after(session, runner, f"answer {i}")
    runner.run(session_end_event(session))
    counts = ids_queued(runner)
    assert counts and max(counts.values()) == 1, {k: v for k, v in counts.items() if v > 1}
    records = runner.latest()
    assert len(records) == 8
    gens = [o for r in records.values() for o in observations(r, "generation")]
    assert len(gens) == 16 and len(counts) == sum(len(r["observations"]) for r in records.values())


def test_without_the_wait_the_summary_line_changes_the_root_only(session, runner):
    """An event read before the summary line (the wait ran out: a slow Stop hook of the user's)
    queues the turn; the summary then changes the root's metadata: only the root is queued again,
    never a generation."""
    session.prompt("question")
    session.respond(text("answer"))
    first = runner.run(stop_event(session, "answer"))  # final: the wait is over
    assert len(first) == 1
    session.stop_hook_summary(duration_ms=20000)
    session.turn_duration()
    (again,) = runner.run(session_end_event(session))
    assert again["partial"] is True
    assert [o["id"] for o in again["observations"]] == [root(first[0])["id"]]
    merged = runner.latest()[again["key"]]
    assert [o["id"] for o in merged["observations"]] == [o["id"] for o in first[0]["observations"]]
    assert root(merged)["metadata"]["stop_hook_durations_ms"][0]["durationMs"] == 20000


def test_a_background_agent_finishing_sends_only_what_it_added(session, runner):
    call, agent, fetch = launch_background_agent(session)
    agent_id = agent.agent_id
    session.respond(text("The researcher is running."))
    session.stop_hook_summary()
    session.turn_duration()
    first = runner.run(stop_event(session, "The researcher is running."))
    launching_key = first[0]["key"]
    sent_before = {o["id"]: o for r in first for o in r["observations"]}

    agent.tool_results((fetch["id"], "100 requests per minute"))
    agent.respond(text("The limit is 100 rpm."), out_tokens=30)
    session.task_notification(agent_id, 'Agent "Research API" completed', tool_use_id=call["id"])
    session.respond(text("The researcher found: 100 rpm."))
    session.stop_hook_summary()
    session.turn_duration()
    later = runner.run(stop_event(session, "The researcher found: 100 rpm."))
    refreshed = [r for r in later if r["key"] == launching_key]
    assert refreshed, "the launching turn must be refreshed with the agent's answer"
    resent = [o for r in refreshed for o in r["observations"]]
    assert all(r.get("partial") for r in refreshed)
    assert not [o for o in resent if o["id"] in sent_before and o == sent_before[o["id"]]], "an unchanged observation was sent again"
    assert not [o for o in resent if o["type"] == "generation" and o["id"] in sent_before], "a generation was sent twice"
    (agent_obs,) = observations(runner.latest()[launching_key], "agent")
    assert agent_obs["output"] == "The limit is 100 rpm."


def test_a_line_claude_code_drops_is_not_sent_from_an_older_queued_version(session, runner):
    session.prompt("two")
    session.respond(text("partial answ"), msg_id="msg_dropped")
    runner.run(stop_event(session, "partial answ"))
    data = open(session.path, "rb").read()
    with open(session.path, "r+b") as f:
        f.truncate(data[:-1].rfind(b"\n") + 1)  # the failed stream's line is cut off
    session.respond(text("complete answer after a retry"), msg_id="msg_retry")
    session.turn_duration()
    runner.run(stop_event(session, "complete answer after a retry"))
    (merged,) = runner.latest().values()
    assert [g["metadata"]["message_id"] for g in observations(merged, "generation")] == ["msg_retry"]


def test_merge_keeps_the_newest_version_of_each_observation_and_the_root_first():
    full = {"key": "turn:t", "queued_at": "2026-01-01T00:00:00.000Z", "rev": "a", "trace": {"id": "t"},
            "observations": [{"id": "r", "v": 1}, {"id": "g1", "v": 1}, {"id": "g2", "v": 1}]}  # fmt: skip
    part = {"key": "turn:t", "queued_at": "2026-01-01T00:00:01.000Z", "rev": "b", "trace": {"id": "t", "name": "new"}, "partial": True,
            "observation_ids": ["r", "g1", "g2", "g3"], "observations": [{"id": "g2", "v": 2}, {"id": "g3", "v": 1}]}  # fmt: skip
    merged = merge_versions([part, full])
    assert [(o["id"], o["v"]) for o in merged["observations"]] == [("r", 1), ("g1", 1), ("g2", 2), ("g3", 1)]
    assert merged["rev"] == "b" and merged["trace"]["name"] == "new" and "partial" not in merged
    # alone, a partial version stays partial: what it lacks was delivered before
    assert merge_versions([part])["partial"] is True


def test_a_partial_version_is_delivered_as_just_its_observations(session, runner, langfuse_standin):
    session.prompt("question")
    session.respond(text("answer"))
    runner.run(stop_event(session, "answer"))
    settings = runner.settings._replace(
        public_key=langfuse_standin.public_key, secret_key=langfuse_standin.secret_key, base_url=langfuse_standin.base_url
    )
    import logging

    log = logging.getLogger("cc-langfuse-test-resends")
    log.propagate = False
    assert drain_queue(settings, log).sent == 1
    received = len(langfuse_standin.spans)
    session.stop_hook_summary(duration_ms=12345)
    session.turn_duration()
    runner.run(session_end_event(session))
    assert drain_queue(settings, log).sent == 1
    assert len(langfuse_standin.spans) == received + 1, "only the changed root may be sent again"
    assert len(langfuse_standin.observations()) == received


def test_bookkeeping_lines_after_a_settled_turn_are_not_a_reason_to_read_it_again(session, runner, monkeypatch):
    """After a Stop, Claude Code appends last-prompt / cost-state lines and SessionEnd follows: the
    worker must not read, group and redact the (possibly 25 MB) open turn again for them."""
    import json as _json

    from claude_code_langfuse import collect

    session.simple_turn("question", "answer")
    assert len(runner.run(stop_event(session, "answer"))) == 1
    reads = []
    real = collect.group_turns
    monkeypatch.setattr(collect, "group_turns", lambda *a, **k: reads.append(1) or real(*a, **k))
    for row in (
        {"type": "last-prompt", "lastPrompt": "question", "sessionId": session.session_id},
        {"type": "cost-state", "sessionId": session.session_id},
    ):
        session.raw((_json.dumps(row) + "\n").encode())
    assert runner.run(session_end_event(session)) == []
    assert reads == [], "the settled open turn was read again for bookkeeping lines"
    # anything else is read: a new prompt
    session.simple_turn("next question", "next answer")
    assert [r["trace"]["name"] for r in runner.run(stop_event(session, "next answer"))] == ["next question"]
    assert reads


def test_a_line_half_written_when_the_turn_was_queued_is_read_once_it_is_whole(session, runner):
    """Found by the property test: the skip for bookkeeping lines must start at a line boundary."""
    import json as _json

    session.simple_turn("first", "first answer")
    session.prompt("second")
    session.respond(text("second answer"))
    line = (_json.dumps({"type": "system", "subtype": "turn_duration", "durationMs": 5, "sessionId": session.session_id}) + "\n").encode()
    session.raw(line[:-10])  # Claude Code is still writing it
    runner.run(stop_event(session, "second answer"))
    session.raw(line[-10:])
    runner.run(session_end_event(session))
    assert any(r["trace"]["name"] == "second" and root(r)["metadata"].get("turn_duration_ms") == 5 for r in runner.latest().values())
