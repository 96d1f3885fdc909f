"""End to end with the real Claude Code CLI (2.1.328): one 401 never stops delivery (issue 9, item 1).

A server answers 401 to the first two turns, then takes the same keys again. The next prompt's
Stop delivers every turn within seconds, each once, with nothing left in the queue: an auth
failure backs off for seconds (like every other failure), and every hook event is a reason to
try again once the last attempt is a few seconds old.
"""

from __future__ import annotations

import time

import pytest
from fake_messages_api import reply
from test_e2e_cli import Traced, main_turns, new_standin, trace_id_for

pytestmark = pytest.mark.e2e


def test_401_for_two_turns_then_the_same_keys_work_the_next_prompt_delivers_everything(claude_cli, tmp_path):
    standin = new_standin().start()
    try:
        t = Traced(tmp_path, standin)
        standin.script([401] * 6)  # whatever the number of attempts these two runs make
        first = t.run("first prompt, the server says 401", [reply("First answer.")], expect_result="First answer.")
        t.wait_worker()
        assert standin.statuses[:1] == [401]
        assert t.status()["last_error"]["kind"] == "auth"
        second = t.run("second prompt, 401 again", [reply("Second answer.")], resume=first.session_id, expect_result="Second answer.")
        t.wait_worker()
        assert standin.statuses.count(401) >= 2 and not standin.traces(), standin.statuses
        st = t.status()
        assert st["queue_turns"] == 2 and st["last_error"]["kind"] == "auth"
        # an auth failure waits seconds, not minutes, and status says when the next try is
        failures = standin.statuses.count(401)
        assert st["next_attempt_epoch"] - st["last_attempt_epoch"] <= 5 * 2 ** (failures - 1) + 0.5, (failures, st)
        assert st["next_try"] and "next Claude Code event" in st["next_try"]["text"]

        # the server takes the same keys again: the next prompt's Stop delivers all three turns
        standin.script([])  # the same keys work again
        started = time.monotonic()
        third = t.run("third prompt, the server is fine", [reply("Third answer.")], resume=first.session_id, expect_result="Third answer.")
        turns = main_turns(third.lines())
        assert len(turns) == 3, [tv.prompt for tv in turns]
        ids = {
            trace_id_for(first.session_id, tv.prompt_id): answer
            for tv, answer in zip(turns, ["First answer.", "Second answer.", "Third answer."], strict=True)
        }
        assert len(turns) == 3 and second.session_id == first.session_id
        t.wait_delivered(lambda: t.roots_with_output(ids), timeout=15)
        took = time.monotonic() - started
        assert took < 15, f"delivered {took:.1f} s after the prompt"
        assert sorted(standin.traces()) == sorted(ids)
        assert len(standin.spans) == len(standin.observations()), "a span was sent twice"
        st = t.status()
        assert st["last_error"] is None and st["queue_turns"] == 0 and st["sent_total"] == 3, st
    finally:
        standin.stop()
