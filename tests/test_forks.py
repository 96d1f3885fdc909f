"""Forked sessions (`--resume SID --fork-session`, `/branch`): the copied history is not traced again.

The fork files here are made the way Claude Code 2.1.328 makes them (docs/claude-code-observed.md,
../shared/notes/transcript-format.md section 14): every earlier line copied under the fork's session
id, every copied user line given the fork's new promptId (the one its first new prompt gets), uuids,
message ids and timestamps kept. tests/test_e2e_cli.py runs the same scenario with the real CLI.
"""

from __future__ import annotations

import json
import pathlib
import uuid

import pytest
from claude_code_langfuse import collect, forks
from transcript_factory import HookRunner, Transcript, observations, root, stop_event, text

FORK_SESSION = "0f0f0f0f-1111-4222-8333-444455556666"


def fork_of(parent: Transcript, new_prompt_id: str, session_id: str = FORK_SESSION) -> Transcript:
    """A fork file as Claude Code writes it, before the fork's own first prompt."""
    path = pathlib.Path(parent.path).with_name(f"{session_id}.jsonl")
    out = [json.dumps({"type": "queue-operation", "operation": "enqueue", "sessionId": session_id}, separators=(",", ":"))]
    for line in pathlib.Path(parent.path).read_text().splitlines():
        row = json.loads(line)
        if "sessionId" in row:
            row["sessionId"] = session_id
        if row.get("type") == "user" and row.get("promptId"):
            row["promptId"] = new_prompt_id
        out.append(json.dumps(row, separators=(",", ":")))  # compact, as Claude Code writes
    path.write_text("\n".join(out) + "\n")
    fork = Transcript(str(path), session_id=session_id)
    fork.last_uuid = parent.last_uuid
    fork.clock = parent.clock
    return fork


@pytest.fixture
def parent(tmp_path):
    t = Transcript(str(tmp_path / "projects" / "-home-dev-proj" / "5b469540-beb0-4db7-b5e1-5bf71f36cd69.jsonl"))
    t.simple_turn("first prompt", "first answer", tool=("Bash", {"command": "ls"}, "a b"))
    t.simple_turn("second prompt", "second answer")
    return t


def _generations(records: list[dict]) -> list[dict]:
    return [o for r in records for o in observations(r, "generation")]


def test_fork_queues_only_its_own_turn(tmp_path, parent):
    runner = HookRunner(str(tmp_path / "state"))
    parent_records = runner.run(stop_event(parent, "second answer"))
    assert sorted(r["trace"]["name"] for r in parent_records) == ["first prompt", "second prompt"]
    new_prompt_id = str(uuid.uuid4())
    fork = fork_of(parent, new_prompt_id)
    fork.prompt("third prompt, in a fork", prompt_id=new_prompt_id)
    fork.respond(text("third answer"))
    fork.turn_duration()

    fork_records = runner.run(stop_event(fork, "third answer"))
    assert [r["trace"]["name"] for r in fork_records] == ["third prompt, in a fork"]
    (record,) = fork_records
    assert record["trace"]["session_id"] == FORK_SESSION
    assert record["trace"]["metadata"]["forked_from"] == parent.session_id
    assert record["trace"]["metadata"]["turn_number"] == 3  # numbered after the copied history
    assert root(record)["output"] == "third answer"
    assert len(_generations(fork_records)) == 1, "copied generations were counted again"
    # nothing of the parent is doubled: every message id is sent once over both sessions
    message_ids = [o["id"] for o in _generations(parent_records + fork_records)]
    assert len(message_ids) == len(set(message_ids))
    # and a later event of the fork reads on from there
    fork.simple_turn("fourth prompt", "fourth answer")
    assert [r["trace"]["name"] for r in runner.run(stop_event(fork, "fourth answer"))] == ["fourth prompt"]


def test_fork_read_without_detection_is_what_the_issue_saw(tmp_path, parent, monkeypatch):
    """The test above fails without fork detection: one trace of the whole history."""
    monkeypatch.setattr(collect, "find_fork_prefix", lambda path: forks.NOT_A_FORK)
    runner = HookRunner(str(tmp_path / "state"))
    runner.run(stop_event(parent, "second answer"))
    new_prompt_id = str(uuid.uuid4())
    fork = fork_of(parent, new_prompt_id)
    fork.prompt("third prompt, in a fork", prompt_id=new_prompt_id)
    fork.respond(text("third answer"))
    fork_records = runner.run(stop_event(fork, "third answer"))
    assert [r["trace"]["name"] for r in fork_records] == ["first prompt"]
    assert len(_generations(fork_records)) > 1


def test_fork_of_a_fork_starts_after_everything_copied(tmp_path, parent):
    runner = HookRunner(str(tmp_path / "state"))
    runner.run(stop_event(parent, "second answer"))
    p1 = str(uuid.uuid4())
    fork1 = fork_of(parent, p1)
    fork1.prompt("third prompt", prompt_id=p1)
    fork1.respond(text("third answer"))
    fork1.turn_duration()
    assert [r["trace"]["name"] for r in runner.run(stop_event(fork1, "third answer"))] == ["third prompt"]
    p2 = str(uuid.uuid4())
    fork2 = fork_of(fork1, p2, session_id="0f0f0f0f-1111-4222-8333-777788889999")
    fork2.prompt("fourth prompt, fork of the fork", prompt_id=p2)
    fork2.respond(text("fourth answer"))
    records = runner.run(stop_event(fork2, "fourth answer"))
    assert [r["trace"]["name"] for r in records] == ["fourth prompt, fork of the fork"]
    assert records[0]["trace"]["metadata"]["forked_from"] == FORK_SESSION
    assert records[0]["trace"]["metadata"]["turn_number"] == 4


def test_an_ordinary_session_is_not_a_fork(tmp_path, parent):
    other = Transcript(str(pathlib.Path(parent.path).with_name("00000000-0000-4000-8000-000000000009.jsonl")))
    other.simple_turn("a prompt of its own", "ok")
    other.simple_turn("another", "ok")
    assert forks.find_fork_prefix(other.path) == forks.NOT_A_FORK
    assert forks.find_fork_prefix(parent.path) == forks.NOT_A_FORK
    records = HookRunner(str(tmp_path / "state")).run(stop_event(other, "ok"))
    assert [r["trace"]["name"] for r in records] == ["a prompt of its own", "another"]
    assert "forked_from" not in records[0]["trace"]["metadata"]


def test_fork_read_before_its_parent_is_not_doubled(tmp_path, parent):
    """Backfill (or a late event) may read the fork first: the parent's turns still come once each."""
    new_prompt_id = str(uuid.uuid4())
    fork = fork_of(parent, new_prompt_id)
    fork.prompt("third prompt, in a fork", prompt_id=new_prompt_id)
    fork.respond(text("third answer"))
    fork.turn_duration()
    runner = HookRunner(str(tmp_path / "state"))
    names = [r["trace"]["name"] for r in runner.run(stop_event(fork, "third answer"))]
    names += [r["trace"]["name"] for r in runner.run(stop_event(parent, "second answer"))]
    assert sorted(names) == ["first prompt", "second prompt", "third prompt, in a fork"]
