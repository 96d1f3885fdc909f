"""Claude Code 2.1.x writes whole API requests into the transcript; the hook must not choke on them
(or decode them), and must still read the lines it needs, however big."""

from __future__ import annotations

import json

from claude_code_langfuse import transcript as h
from transcript_factory import Clock, HookRunner, Transcript, stop_event, text, tool_use

SESSION = "5b469540-beb0-4db7-b5e1-5bf71f36cd69"


def write_raw(t: Transcript, row: dict) -> None:
    """A line laid out as 2.1.328 lays it out (key order matters for the fast path)."""
    with open(t.path, "ab") as f:
        f.write(json.dumps(row, separators=(",", ":")).encode() + b"\n")


def test_big_request_and_attachment_lines_are_skipped_but_request_times_kept(tmp_path):
    t = Transcript(str(tmp_path / f"{SESSION}.jsonl"), session_id=SESSION, clock=Clock("2026-11-23T10:00:00.000Z"), noise=False)
    t.prompt("summarise the logs")
    big = "x" * 300_000
    # key order exactly as the CLI writes these lines (docs/claude-code-observed.md)
    write_raw(
        t,
        {
            "parentUuid": t.last_uuid,
            "isSidechain": False,
            "attachment": {"type": "prompt_snapshot", "content": big},
            "type": "attachment",
            "uuid": "att-1",
            "timestamp": "2026-11-23T10:00:01.500Z",
            "sessionId": SESSION,
        },
    )
    write_raw(t, {"type": "api-request-shape", "sessionId": SESSION, "shapeHash": "abc", "shape": {"system": big}})
    write_raw(t, {"type": "api-request-blob", "sessionId": SESSION, "hash": "def", "blob": {"messages": big}})
    request_id = "ref-msg_big"
    write_raw(
        t,
        {
            "type": "api-request",
            "sessionId": SESSION,
            "id": request_id,
            "timestamp": "2026-11-23T10:00:02.250Z",
            "version": "2.1.328",
            "params": {"model": "claude-opus-5-5", "system": big},
        },
    )
    call = tool_use("Read", {"file_path": "/var/log/big.log"})
    t.respond(text("Reading."), call, msg_id="msg_big")
    t.tool_results((call["id"], "line\n" * 50_000))  # a big line the hook must read
    t.respond(text("The logs are fine."))

    runner = HookRunner(str(tmp_path / "state"))
    [record] = runner.run(stop_event(t, "The logs are fine."))
    gens = [o for o in record["observations"] if o["type"] == "generation"]
    [tool] = [o for o in record["observations"] if o["type"] == "tool"]
    assert gens[0]["start"] == "2026-11-23T10:00:02.250Z"  # from the api-request line
    assert tool["output"].count("line") >= 10_000  # the big tool result was decoded (cut only by the field limit)
    assert "x" * 1000 not in json.dumps(record)  # nothing of the skipped lines leaked into the trace
    assert not any("unreadable" in line for line in runner.logs)


def test_a_small_line_of_those_kinds_is_decoded_normally(tmp_path):
    path = tmp_path / "t.jsonl"
    rows = [
        {"type": "api-request", "id": "r1", "timestamp": "2026-11-23T10:00:00.000Z"},
        {"type": "user", "message": {"content": "hi"}},
        {"type": "skipped", "note": "a real line of that type is kept"},
    ]
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows))
    with open(path, "rb") as f:
        got = [r.data for r in h.iter_rows(f, 0)]
    assert got == rows


def test_rows_are_split_correctly_across_read_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(h, "READ_CHUNK", 7)  # lines straddle every chunk boundary
    path = tmp_path / "t.jsonl"
    rows = [{"type": "user", "n": i, "pad": "p" * (i % 13)} for i in range(200)]
    data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    path.write_bytes(data + b'{"type": "user", "half')
    with open(path, "rb") as f:
        got = list(h.iter_rows(f, 0))
    assert [r.data for r in got] == rows
    assert got[-1].end == len(data)  # the half-written last line is not consumed
    assert all(data[r.start : r.end].endswith(b"\n") and json.loads(data[r.start : r.end]) == r.data for r in got)
