"""A record is JSON-encoded once (issue 8: a 26 MB record of a 25 MB open turn was encoded three
times per event, for its rev, its observations' revs and its queue line). The revs are hashed
from the bytes the queue writer then joins into the line; the line stays one JSON object that
store.queue_read reads like any other; the revs stay a function of the content alone."""

from __future__ import annotations

import json

from claude_code_langfuse import redaction, store
from claude_code_langfuse.redaction import EncodedRecord, encode_record, record_rev
from transcript_factory import stop_event, text, tool_use


def a_record(big: str = "x") -> dict:
    return {
        "key": "s1::t1",
        "trace": {"id": "t" * 32, "name": "turn 1", "metadata": {"b": 1, "a": [1, 2]}},
        "observations": [
            {"id": "root", "parent_id": None, "type": "span", "name": "turn", "input": "hi", "metadata": {"z": 1, "a": 2}},
            {"id": "gen", "parent_id": "root", "type": "generation", "name": "model", "output": big, "metadata": {}},
            {"id": "tool", "parent_id": "root", "type": "tool", "name": "Bash", "input": {"command": "ls"}, "metadata": {}},
        ],
    }


def reordered(obj):
    """The same content with every dict's keys in reverse order."""
    if isinstance(obj, dict):
        return {k: reordered(obj[k]) for k in reversed(list(obj))}
    if isinstance(obj, list):
        return [reordered(v) for v in obj]
    return obj


def test_the_revs_are_the_content_s_not_the_order_its_dicts_were_built_in():
    rec, rev, obs_revs = encode_record(a_record())
    again, rev2, obs_revs2 = encode_record(reordered(a_record()))
    assert (rev, obs_revs) == (rev2, obs_revs2)
    assert record_rev(a_record()) == rev == record_rev(dict(rec, rev="old", queued_at="2026-01-01T00:00:00.000Z"))
    assert len(rev) == 16 and len(set(obs_revs)) == 3 and all(len(r) == 12 for r in obs_revs)


def test_a_changed_observation_changes_its_rev_and_the_record_s_only():
    _, rev, obs_revs = encode_record(a_record("x"))
    _, rev2, obs_revs2 = encode_record(a_record("y"))
    assert rev != rev2
    assert [a == b for a, b in zip(obs_revs, obs_revs2, strict=True)] == [True, False, True]
    changed = a_record()
    changed["trace"]["name"] = "turn one"
    assert encode_record(changed)[1] != rev and encode_record(changed)[2] == obs_revs  # a trace field is in the record's rev


def test_the_queue_line_is_one_json_object_the_reader_reads(tmp_path):
    from claude_code_langfuse.config import ensure_state_dir
    from claude_code_langfuse.files import Paths

    paths = Paths(str(tmp_path))
    ensure_state_dir(paths.dir)
    rec, rev, _ = encode_record(a_record('ünïcode \u2028 "quoted" \n'))
    rec["rev"] = rev
    plain = dict(a_record("plain"), rev="r2")
    store.queue_append(paths, [rec, plain])
    entries = store.queue_read(paths.queue)
    assert [e.error for e in entries] == ["", ""]
    first, second = (e.record for e in entries)
    assert first == dict(a_record('ünïcode \u2028 "quoted" \n'), rev=rev, queued_at=first["queued_at"])
    assert second == dict(a_record("plain"), rev="r2", queued_at=second["queued_at"])
    assert list(first)[-2:] == ["queued_at", "rev"]
    assert entries[0].raw.count(b"\n") == 1 and entries[0].raw.endswith(b"\n")


def test_the_queue_line_carries_the_bytes_the_revs_were_hashed_from(monkeypatch):
    rec, rev, _ = encode_record(a_record("y" * 100_000))
    rec["rev"] = rev  # as collect queues it
    encoded_now = []
    real = redaction.json_bytes

    def counting(obj):
        if isinstance(obj, dict) and "parent_id" in obj:
            encoded_now.append(obj["id"])
        return real(obj)

    monkeypatch.setattr(redaction, "json_bytes", counting)
    monkeypatch.setattr(store, "json_bytes", counting)
    line = store.record_line(rec, "2026-12-02T00:00:00.000Z")
    assert encoded_now == [] and json.loads(line)["rev"] == rev
    del rec["rev"]  # a writer that computes the rev itself hashes the same bytes
    assert json.loads(store.record_line(rec, "2026-12-02T00:00:00.000Z"))["rev"] == rev and encoded_now == []
    rec["rev"] = rev
    # an observation put in after the encoding (or another dict in its place) is encoded when written
    rec["observations"] = rec["observations"][:1] + [dict(rec["observations"][1], output="z")]
    line = store.record_line(rec, "2026-12-02T00:00:00.000Z")
    assert encoded_now == ["gen"] and json.loads(line)["observations"][1]["output"] == "z"


def test_a_partial_version_is_its_changed_observations_plus_the_ids_it_holds():
    rec, rev, _ = encode_record(a_record())
    rec["observations"] = rec["observations"][1:2]
    rec.update(partial=True, observation_ids=["root", "gen", "tool"], rev=rev)
    got = json.loads(store.record_line(rec, "2026-12-02T00:00:00.000Z"))
    assert [o["id"] for o in got["observations"]] == ["gen"]
    assert got["partial"] is True and got["observation_ids"] == ["root", "gen", "tool"] and got["rev"] == rev


def test_a_lone_surrogate_is_written_as_u_fffd_and_never_raises():
    bad = a_record("\ud83d alone")
    rec, rev, _ = encode_record(bad)
    line = store.record_line(rec, "2026-12-02T00:00:00.000Z")
    assert json.loads(line.decode("utf-8"))["observations"][1]["output"] == "\ufffd alone"
    assert isinstance(rev, str) and record_rev(bad) == rev


def test_a_record_without_an_observation_list_is_still_written():
    line = store.record_line({"key": "k", "trace": {}, "observations": None}, "2026-12-02T00:00:00.000Z")
    assert json.loads(line)["observations"] is None


def test_reading_the_same_turn_again_queues_nothing_and_the_queue_holds_encoded_records(session, runner):
    session.prompt("look")
    call = tool_use("Bash", {"command": "ls"})
    session.respond(text("Let me check."), call)
    session.tool_results((call["id"], "a" * 50_000))
    session.respond(text("done"))
    first = runner.run(stop_event(session, "done"))
    assert len(first) == 1 and first[0]["rev"] == record_rev(first[0])
    assert runner.run(stop_event(session, "done")) == []  # same content, same rev: resending changes nothing


def test_collect_hands_the_queue_writer_encoded_records(session, runner, monkeypatch):
    from claude_code_langfuse import collect

    seen = []
    real = collect.queue_append
    monkeypatch.setattr(collect, "queue_append", lambda paths, records, **kw: (seen.extend(records), real(paths, records, **kw)))
    session.prompt("look")
    session.respond(text("done"))
    runner.run(stop_event(session, "done"))
    assert seen and all(isinstance(r, EncodedRecord) and r.parts for r in seen)
