"""Delivery recovers promptly (issue 9, items 1 and 3): nothing late, nothing put back over newer data.

Through the real hook process and its detached worker, against the Langfuse stand-in (the rig of
tests/test_delivery.py). The rule under test: every hook event is a reason to try again once the
last attempt is a few seconds old, auth failures back off like every other failure (seconds,
doubling, capped), the worker itself retries a short back-off before it exits, and `status` says
when the next try is. And `drain --retry-dead` never puts an older version of a turn back over a
newer one that Langfuse already has.
"""

from __future__ import annotations

import json
import os
import time

from test_delivery import Holds, Rig, assert_delivered_exactly_once, expected_turns, wait_for
from transcript_factory import stop_event


def wait_until_epoch(epoch: float) -> None:
    wait_for(lambda: time.time() >= epoch, "a moment in the future")


def backlog_behind_an_outage(rig: Rig, standin, turns: int):
    """A session of `turns` turns queued while the server was down; the server is back and the
    retry gap is over. Returns the transcript."""
    from test_delivery import session_with_turns

    standin.stop()
    t = session_with_turns(rig, turns, tag="backlog ")
    rig.hook(stop_event(t))
    rig.wait_failure("retry")
    standin.start()
    retry_gap_passed(rig)
    return t


def arrival_order(standin) -> list[str]:
    """Trace ids in the order their first span reached the stand-in."""
    return list(dict.fromkeys(o.trace_id for o in standin.observations()))


def retry_gap_passed(rig: Rig) -> None:
    """Wait until hook news may retry (the last attempt is RETRY_ON_NEWS_S old)."""
    from claude_code_langfuse.worker import RETRY_ON_NEWS_S

    wait_until_epoch(float(rig.sender_status()["last_attempt_epoch"]) + RETRY_ON_NEWS_S + 0.1)


# ------------------------------------------------------------------------------ 1. one 401 never stops delivery


def test_401_then_down_then_hanging_then_healthy_the_next_stop_delivers_the_whole_queue(rig, langfuse_standin):
    """The server answers 401 to two turns, then takes the same keys again; then it is down for
    three turns and hangs for two. The next Stop with a healthy server delivers all of them within
    seconds, even though it comes right after the last failure."""
    t = rig.transcript()
    langfuse_standin.script([401, 401])
    t.simple_turn("auth one", "answer auth one")
    rig.hook(stop_event(t))
    first = rig.wait_failure("auth")
    assert first["http_status"] == 401
    retry_gap_passed(rig)
    t.simple_turn("auth two", "answer auth two")
    rig.hook(stop_event(t))  # a hook event 5 s after the last try: a new attempt, the second 401
    wait_for(lambda: rig.sender_status().get("consecutive_failures") == 2, "the second 401")
    rig.wait_sender_idle()
    assert langfuse_standin.statuses.count(401) == 2
    st = rig.sender_status()
    # an auth failure backs off for seconds, not minutes
    assert st["next_attempt_epoch"] - st["last_attempt_epoch"] <= 10.5, st

    # the server is down for three turns
    port = langfuse_standin.port
    langfuse_standin.stop()
    retry_gap_passed(rig)
    for i in range(3):
        t.simple_turn(f"down {i}", f"answer down {i}")
        rig.hook(stop_event(t))
    wait_for(lambda: (rig.last_error() or {}).get("kind") == "retry", "the refused connection")
    assert str(port) in rig.last_error()["detail"]

    # ... then it hangs for two
    holds = Holds(langfuse_standin)
    langfuse_standin.hang()
    langfuse_standin.start()
    rig.wait_sender_idle()
    retry_gap_passed(rig)
    for i in range(2):
        t.simple_turn(f"hang {i}", f"answer hang {i}")
        rig.hook(stop_event(t))
    wait_for(lambda: holds.count, "a request to reach the hanging server")
    wait_for(lambda: "no answer" in ((rig.last_error() or {}).get("detail") or ""), "the timeout")
    langfuse_standin.release()
    langfuse_standin.hanging = False
    assert len(rig.queued_keys()) == len(expected_turns(t)) == 7

    # healthy again: the next Stop delivers everything
    t.simple_turn("healthy", "answer healthy")
    expected = expected_turns(t)
    started = time.monotonic()
    rig.hook(stop_event(t))
    rig.wait_delivered(expected)
    took = time.monotonic() - started
    assert_delivered_exactly_once(langfuse_standin, expected)
    assert took < 12, f"the queue waited {took:.1f} s after the Stop"
    st = rig.status()
    assert st["last_error"] is None and st["queue_turns"] == 0 and st["sent_total"] == 8


def test_a_stop_right_after_a_failure_delivers_once_the_retry_gap_is_over(rig, langfuse_standin):
    """The last attempt failed a moment ago (here: 0.5 s) and its back-off runs for minutes; the
    server is fine again. The Stop that comes now is a reason to retry as soon as the last try
    is RETRY_ON_NEWS_S old: the worker waits for that moment instead of exiting (the next hook
    event may be hours away)."""
    from claude_code_langfuse.worker import RETRY_ON_NEWS_S

    t = rig.transcript()
    t.simple_turn("queued during the outage", "kept")
    langfuse_standin.stop()
    rig.hook(stop_event(t))
    rig.wait_failure("retry")
    langfuse_standin.start()
    status = rig.state / "langfuse_sender.json"
    data = json.loads(status.read_text())
    data.update(last_attempt_epoch=time.time() - 0.5, next_attempt_epoch=time.time() + 300, consecutive_failures=7)
    status.write_text(json.dumps(data))
    t.simple_turn("right after the failure", "delivered")
    expected = expected_turns(t)
    started = time.monotonic()
    rig.hook(stop_event(t))
    rig.wait_delivered(expected)
    took = time.monotonic() - started
    assert_delivered_exactly_once(langfuse_standin, expected)
    assert RETRY_ON_NEWS_S - 1 <= took < RETRY_ON_NEWS_S + 6, f"delivered after {took:.1f} s"


def test_status_says_when_the_next_try_is(rig, langfuse_standin):
    langfuse_standin.stop()
    t = rig.transcript()
    t.simple_turn("q", "a")
    rig.hook(stop_event(t))
    rig.wait_failure("retry")
    st = rig.status()
    assert st["next_attempt_epoch"] > st["last_attempt_epoch"] > 0
    # a hook event may retry RETRY_ON_NEWS_S after the last try, before the back-off is over
    assert st["last_attempt_epoch"] < st["next_try"]["epoch"] <= st["next_attempt_epoch"]
    out = rig.cli("status").stdout
    line = next(line for line in out.splitlines() if line.strip().startswith("Next try"))
    assert "at the next Claude Code event from" in line and " drain`" in line, out
    retry_gap_passed(rig)
    out = rig.cli("status").stdout
    line = next(line for line in out.splitlines() if line.strip().startswith("Next try"))
    assert "at the next Claude Code event, or now" in line, out


def test_auth_backoff_doubles_and_is_capped(tmp_path):
    """Auth failures back off like the others: 5 s, doubling, at most 5 minutes."""
    import logging

    from claude_code_langfuse.config import Settings
    from claude_code_langfuse.delivery import MAX_BACKOFF_S, _record_failure
    from claude_code_langfuse.files import Paths

    state = tmp_path / "state"
    (state / "locks").mkdir(parents=True)
    paths = Paths(str(state))
    settings = Settings(public_key="pk", secret_key="sk", state_dir=str(state))
    waits = []
    for _ in range(10):
        _record_failure(paths, settings, "auth", 401, "401", "advice", logging.getLogger("test-null"))
        st = json.loads((state / "langfuse_sender.json").read_text())
        waits.append(round(st["next_attempt_epoch"] - st["last_attempt_epoch"]))
    assert waits == [5, 10, 20, 40, 80, 160, 300, 300, 300, 300]
    assert MAX_BACKOFF_S == 300


# ------------------------------------------------------------------------------ 3. retry-dead never puts back an older version


def _quiet_log():
    import logging

    log = logging.getLogger("cc-langfuse-recovery-quiet")
    log.propagate = False
    return log


def test_retry_dead_never_resends_a_version_older_than_the_one_delivered(tmp_path, langfuse_standin):
    """Version A of a turn was dead-lettered (a 400, e.g. a proxy rule fixed later); the turn went
    on, version B was queued and delivered, the queue is empty. `drain --retry-dead` must not put
    A back: Langfuse would end with the older version."""
    from claude_code_langfuse.commands import retry_dead_letters
    from claude_code_langfuse.delivery import drain_queue
    from transcript_factory import HookRunner, Transcript, text

    session = Transcript(str(tmp_path / "projects" / "-p" / "5b469540-beb0-4db7-b5e1-5bf71f36cd70.jsonl"))
    runner = HookRunner(str(tmp_path / "state"))
    settings = runner.settings._replace(
        public_key=langfuse_standin.public_key, secret_key=langfuse_standin.secret_key, base_url=langfuse_standin.base_url
    )
    session.prompt("write the release notes")
    session.respond(text("Draft one."))
    runner.run(stop_event(session, "Draft one."))
    langfuse_standin.script([400])
    assert drain_queue(settings, _quiet_log()).dead == 1
    session.stop_feedback("Add the migration notes.")
    session.respond(text("Final notes with migrations."))
    session.turn_duration()
    runner.run(stop_event(session, "Final notes with migrations.", stop_hook_active=True))
    assert drain_queue(settings, _quiet_log()).sent == 1
    assert runner.queue() == []
    spans = len(langfuse_standin.spans)

    assert retry_dead_letters(runner.paths) == 0
    assert runner.queue() == []
    drain_queue(settings, _quiet_log())
    assert len(langfuse_standin.spans) == spans, "the old version was sent again"
    roots = [o for o in langfuse_standin.observations() if o.parent_id is None]
    assert [r.output for r in roots] == ["Final notes with migrations."]
    # the superseded dead letter is gone: status no longer offers to resend it
    assert not open(runner.paths.dead).read().strip()


def test_retry_dead_still_resends_a_version_newer_than_the_one_delivered(tmp_path, langfuse_standin):
    """The other way round: B delivered first, then a newer version C dead-lettered. C goes back."""
    from claude_code_langfuse.commands import retry_dead_letters
    from claude_code_langfuse.delivery import drain_queue
    from transcript_factory import HookRunner, Transcript, text

    session = Transcript(str(tmp_path / "projects" / "-p" / "5b469540-beb0-4db7-b5e1-5bf71f36cd71.jsonl"))
    runner = HookRunner(str(tmp_path / "state"))
    settings = runner.settings._replace(
        public_key=langfuse_standin.public_key, secret_key=langfuse_standin.secret_key, base_url=langfuse_standin.base_url
    )
    session.prompt("write the release notes")
    session.respond(text("Draft one."))
    runner.run(stop_event(session, "Draft one."))
    assert drain_queue(settings, _quiet_log()).sent == 1
    session.stop_feedback("Add the migration notes.")
    session.respond(text("Final notes with migrations."))
    session.turn_duration()
    runner.run(stop_event(session, "Final notes with migrations.", stop_hook_active=True))
    langfuse_standin.script([400])
    assert drain_queue(settings, _quiet_log()).dead == 1
    assert retry_dead_letters(runner.paths) == 1
    assert drain_queue(settings, _quiet_log()).sent == 1
    roots = {o.output for o in langfuse_standin.observations() if o.parent_id is None}
    assert roots == {"Final notes with migrations."}


def test_the_record_of_delivered_versions_is_private_and_bounded(tmp_path, langfuse_standin, monkeypatch):
    from claude_code_langfuse import delivery
    from claude_code_langfuse.files import Paths

    paths = Paths(str(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    monkeypatch.setattr(delivery, "MAX_DELIVERED", 50)
    for i in range(120):
        delivery.remember_delivered(paths, {f"turn:{i:032x}": (f"{i:016x}", f"2026-01-01T00:00:{i // 10:02d}.{i % 10:03d}Z")})
    kept = delivery.load_delivered(paths)
    assert len(kept) == 50
    assert set(kept) == {f"turn:{i:032x}" for i in range(70, 120)}  # the newest are kept
    assert os.stat(paths.delivered).st_mode & 0o777 == 0o600


def test_no_keys_is_one_log_line_per_event_and_keys_set_later_send_at_once(rig, langfuse_standin):
    """Without keys the worker used to retry every poll (80 identical errors for one event);
    now it backs off like any failure, and the next event with keys sends at once."""
    t = rig.transcript()
    t.simple_turn("before the keys", "kept")
    rig.hook(stop_event(t), CC_LANGFUSE_PUBLIC_KEY="", CC_LANGFUSE_SECRET_KEY="")
    error = rig.wait_failure("nokeys")
    assert "CC_LANGFUSE_PUBLIC_KEY" in error["advice"]
    problems = [line for line in rig.log_lines() if " ERROR " in line]
    assert len(problems) == 1, "\n".join(problems)
    t.simple_turn("with the keys", "sent")
    expected = expected_turns(t)
    rig.hook(stop_event(t))  # right away: the keys changed, no wait
    rig.wait_delivered(expected)
    assert_delivered_exactly_once(langfuse_standin, expected)


def test_the_turn_just_finished_goes_before_the_backlog(rig, langfuse_standin):
    """After an outage, the queue is sent newest first: the turn the user just finished is the
    first trace Langfuse gets, not the last of the backlog (which follows, each turn once)."""
    t = backlog_behind_an_outage(rig, langfuse_standin, 12)
    t.simple_turn("just now", "the live answer")
    expected = expected_turns(t)
    live = list(expected)[-1]
    rig.hook(stop_event(t))
    rig.wait_delivered(expected)
    assert_delivered_exactly_once(langfuse_standin, expected)
    arrival = arrival_order(langfuse_standin)
    assert arrival[0] == live and len(arrival) == 13, arrival


# ------------------------------------------------------------------------------ the worker retries by itself


def test_a_server_down_at_the_last_stop_gets_the_turn_without_another_event(rig, langfuse_standin):
    """The session's last Stop meets a server that is restarting; nothing else happens on the
    machine (no event, no `drain`). The worker stays and retries at the end of its back-off, so
    the turn arrives seconds after the server is back, not at the next session."""
    from claude_code_langfuse.delivery import FIRST_BACKOFF_S

    langfuse_standin.stop()
    t = rig.transcript()
    t.simple_turn("the last prompt of the day", "done for today")
    expected = expected_turns(t)
    rig.hook(stop_event(t), CC_LANGFUSE_RETRY_FOR="600")
    failed_at = wait_for(lambda: (rig.last_error() or {}).get("kind") == "retry" and rig.last_error(), "the refused connection")
    time.sleep(2.5)  # longer than the worker's linger: it would have exited by now
    assert rig.sender_pids(), "the worker exited instead of retrying"
    st = rig.status(CC_LANGFUSE_RETRY_FOR="600")
    assert "by the running worker" in st["next_try"]["text"], st["next_try"]
    langfuse_standin.start()
    started = time.monotonic()
    rig.wait_delivered(expected)
    assert_delivered_exactly_once(langfuse_standin, expected)
    assert time.monotonic() - started < FIRST_BACKOFF_S + 5, "the retry waited for more than its back-off"
    wait_for(lambda: not rig.sender_pids(), "the worker to exit once the queue is empty")
    assert failed_at["kind"] == "retry"


def test_the_worker_does_not_wait_to_retry_what_waiting_cannot_mend(rig, langfuse_standin):
    """Refused keys are the user's to fix: the worker exits (the next event, with new keys, retries)."""
    langfuse_standin.script([401])
    t = rig.transcript()
    t.simple_turn("q", "a")
    rig.hook(stop_event(t), CC_LANGFUSE_RETRY_FOR="600")
    rig.wait_failure("auth")
    wait_for(lambda: not rig.sender_pids(), "the worker to exit after a 401")


def test_the_worker_gives_up_retrying_by_itself_after_retry_for(rig, langfuse_standin):
    """CC_LANGFUSE_RETRY_FOR bounds how long after its last event a worker keeps retrying: with 3 s
    the first back-off (5 s) is already too far, so it exits and the queue waits for the next event."""
    langfuse_standin.stop()
    t = rig.transcript()
    t.simple_turn("q", "a")
    rig.hook(stop_event(t), CC_LANGFUSE_RETRY_FOR="3")
    rig.wait_failure("retry")
    wait_for(lambda: not rig.sender_pids(), "the worker to exit")
    assert rig.queued_keys()


def test_a_turn_finished_during_a_long_backlog_drain_does_not_wait_for_the_backlog(rig, langfuse_standin):
    """The worker is half-way through sending a big backlog (one request per turn, a slow server)
    when the user finishes another turn: that turn goes next, not after the whole backlog."""
    langfuse_standin.delay = 0.1  # 60 turns: about 6 s of sending
    t = backlog_behind_an_outage(rig, langfuse_standin, 60)
    t.simple_turn("first after the outage", "one")
    rig.hook(stop_event(t))
    wait_for(lambda: len(langfuse_standin.traces()) >= 10, "the backlog to be under way")
    t.simple_turn("finished meanwhile", "two")
    expected = expected_turns(t)
    newest = list(expected)[-1]
    rig.hook(stop_event(t))
    rig.wait_delivered(expected)
    assert_delivered_exactly_once(langfuse_standin, expected)
    arrival = arrival_order(langfuse_standin)
    assert arrival.index(newest) < 40, f"the turn finished meanwhile came {arrival.index(newest) + 1}th of {len(arrival)}"
