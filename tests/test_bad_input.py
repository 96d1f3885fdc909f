"""Input that must never block a session: lone UTF-16 surrogates, invalid bytes, turns that cannot be read.

A lone surrogate ("\\ud83d", valid JSON) reaches real transcripts through a model's tool-call input,
tool results that echo it, and older Claude Code versions that split an emoji when truncating. One
bad turn never blocks the rest: text is sanitized (U+FFFD), a turn that still cannot be made into a
record goes to dead letters with a `status` line, and the cursor moves on.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib

import pytest
from claude_code_langfuse import collect, commands, store
from claude_code_langfuse.config import Settings
from claude_code_langfuse.files import Paths
from claude_code_langfuse.records import trace_id_for
from claude_code_langfuse.redaction import Redactor, record_rev, sanitize_record, scrub_surrogates, scrub_text
from claude_code_langfuse.transcript import iter_rows
from test_backfill import make_project, queue, run_cli
from transcript_factory import Clock, HookRunner, Transcript, observations, root, stop_event, text, tool_use

SURROGATE = "\ud83d"  # the high half of 😀, alone: what json.loads gives for "\ud83d"


def surrogates_in(obj) -> list[str]:
    """Every string (dict keys included) of a JSON-like value that holds a surrogate code point."""
    found = []
    if isinstance(obj, str):
        if any(0xD800 <= ord(c) <= 0xDFFF for c in obj):
            found.append(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            found += surrogates_in(k) + surrogates_in(v)
    elif isinstance(obj, list):
        for v in obj:
            found += surrogates_in(v)
    return found


def queue_lines(state: pathlib.Path) -> list[dict]:
    """The queue as bytes on disk: strict UTF-8, no escaped surrogates, nothing that decodes to one."""
    path = state / "pending_traces.jsonl"
    raw = path.read_bytes() if path.exists() else b""
    text_ = raw.decode("utf-8")  # strict: raises on a surrogate written with surrogatepass
    assert "\\ud8" not in text_.lower() and "\\udc" not in text_.lower()
    records = [json.loads(line) for line in text_.splitlines() if line.strip()]
    assert surrogates_in(records) == []
    return records


def surrogate_session(tmp_path: pathlib.Path) -> Transcript:
    """Three turns; the second holds lone surrogates in a Bash description, a Write path and a tool result."""
    t = Transcript(str(tmp_path / "proj" / "s.jsonl"))
    t.simple_turn("first question", "first answer")
    t.prompt("write the emoji file")
    bash = tool_use("Bash", {"command": "ls", "description": f"List files {SURROGATE}"})
    write = tool_use("Write", {"file_path": f"/tmp/{SURROGATE}.txt", "content": "x"})
    t.respond(text("Sure."), bash, write)
    t.tool_results((bash["id"], f"a.txt\n{SURROGATE}.txt"), (write["id"], "File created"))
    t.respond(text(f"Done {SURROGATE}"))
    t.stop_hook_summary()
    t.turn_duration()
    t.simple_turn("third question", "third answer")
    return t


# ============================================================================ the session goes on


def test_lone_surrogates_in_tool_input_and_results_are_sanitized_and_later_turns_arrive(tmp_path):
    t = surrogate_session(tmp_path)
    assert b"\\ud83d" in pathlib.Path(t.path).read_bytes()  # written as Claude Code writes it
    runner = HookRunner(str(tmp_path / "state"))
    runner.run(stop_event(t))
    records = queue_lines(tmp_path / "state")
    assert [root(r)["input"] for r in records] == ["first question", "write the emoji file", "third question"]
    second = records[1]
    tools = {o["name"]: o for o in observations(second, "tool")}
    assert tools["Bash"]["input"]["description"] == "List files \ufffd"
    assert tools["Write"]["input"]["file_path"] == "/tmp/\ufffd.txt"
    assert tools["Bash"]["output"] == "a.txt\n\ufffd.txt"
    assert root(second)["output"] == "Done \ufffd"
    # the cursor moved past everything: the next event queues nothing again, and logs no error
    assert runner.entry(t)["offset"] > 0
    assert runner.run(stop_event(t)) == []
    assert not [line for line in runner.logs if line.startswith(("ERROR", "WARNING"))]
    assert not os.path.exists(tmp_path / "state" / "dead_traces.jsonl")


def test_surrogates_everywhere_text_enters_a_record(tmp_path):
    """Prompt (trace name, root input), tool name, result metadata keys and values, model, cwd, git branch."""
    t = Transcript(str(tmp_path / "proj" / "s.jsonl"), cwd=f"/home/dev/pro{SURROGATE}j", git_branch=f"feat-{SURROGATE}")
    t.prompt(f"emoji {SURROGATE} please")
    call = tool_use(f"mcp__x{SURROGATE}", {f"key{SURROGATE}": [f"v{SURROGATE}", {"n": 1}]})
    t.respond(text("ok"), call, model=f"claude-{SURROGATE}")
    t.tool_results((call["id"], [text(f"out {SURROGATE}")], True), tool_use_result={f"k{SURROGATE}": f"v{SURROGATE}", "n": 3})
    t.respond(text("end"), model=f"claude-{SURROGATE}")
    t.turn_duration()
    runner = HookRunner(str(tmp_path / "state"))
    runner.run(stop_event(t))
    (record,) = queue_lines(tmp_path / "state")
    assert record["trace"]["name"] == "emoji \ufffd please"
    assert record["trace"]["metadata"]["git_branch"] == "feat-\ufffd"
    (tool,) = observations(record, "tool")
    assert tool["name"] == "mcp__x\ufffd"
    assert tool["input"] == {"key\ufffd": ["v\ufffd", {"n": 1}]}
    assert tool["metadata"]["result.k\ufffd"] == "v\ufffd"
    assert tool["status_message"] == "out \ufffd"
    assert {g["model"] for g in observations(record, "generation")} == {"claude-\ufffd"}


def test_an_emoji_split_by_an_older_claude_code_truncation(tmp_path):
    """2.0.x cut long tool output by UTF-16 units: the cut can leave the high half of an emoji."""
    t = Transcript(str(tmp_path / "proj" / "s.jsonl"), version="2.0.28")
    t.prompt("show the log")
    call = tool_use("Bash", {"command": "cat log"})
    t.respond(text("Reading."), call)
    t.tool_results((call["id"], "line 😀 " * 3 + "\ud83d... [1234 characters truncated]"))
    t.respond(text("Here it is."))
    t.simple_turn("next", "fine")
    runner = HookRunner(str(tmp_path / "state"))
    runner.run(stop_event(t))
    records = queue_lines(tmp_path / "state")
    assert [root(r)["input"] for r in records] == ["show the log", "next"]
    assert observations(records[0], "tool")[0]["output"] == "line 😀 " * 3 + "\ufffd... [1234 characters truncated]"


def test_an_invalid_utf8_byte_costs_a_character_not_the_turn(tmp_path):
    """A prompt line with a stray byte was skipped as unreadable: its answer then joined the turn before."""
    t = Transcript(str(tmp_path / "proj" / "s.jsonl"))
    t.simple_turn("first", "answer one")
    line = Transcript.line(t.envelope("user", message={"role": "user", "content": "caf\u00e9 MARK"}, promptId="p-bad"))
    t.raw(line.replace(b"MARK", b"\xff\xfe"))
    t.prompt_id = "p-bad"
    t.respond(text("answer two"))
    t.turn_duration()
    t.simple_turn("third", "answer three")
    runner = HookRunner(str(tmp_path / "state"))
    runner.run(stop_event(t))
    records = queue_lines(tmp_path / "state")
    assert [root(r)["input"] for r in records] == ["first", "caf\u00e9 \ufffd\ufffd", "third"]
    assert [root(r)["output"] for r in records] == ["answer one", "answer two", "answer three"]
    assert not any("unreadable" in line for line in runner.logs)


def test_surrogate_bytes_written_raw_are_read_as_text(tmp_path):
    """A writer that emitted a surrogate as raw bytes (ED A0 BD, "CESU"): json.loads hands over a lone surrogate."""
    t = Transcript(str(tmp_path / "proj" / "s.jsonl"))
    line = Transcript.line(t.envelope("user", message={"role": "user", "content": "raw MARK"}, promptId="p-raw"))
    t.raw(line.replace(b"MARK", b"\xed\xa0\xbd"))
    t.prompt_id = "p-raw"
    t.respond(text("ok"))
    t.turn_duration()
    runner = HookRunner(str(tmp_path / "state"))
    runner.run(stop_event(t))
    (record,) = queue_lines(tmp_path / "state")
    assert root(record)["input"] == "raw \ufffd"


def test_surrogate_in_a_prompt_id_keeps_the_ids_and_the_cursor(tmp_path):
    """A lone surrogate in what makes the ids (promptId, tool_use id) and in the state's turn keys."""
    t = Transcript(str(tmp_path / "proj" / "s.jsonl"))
    t.prompt("odd ids", prompt_id=f"pid-{SURROGATE}")
    call = tool_use("Bash", {"command": "ls"}, id=f"toolu_{SURROGATE}")
    t.respond(text("ok"), call)
    t.tool_results((call["id"], "x"))
    t.respond(text("done"))
    runner = HookRunner(str(tmp_path / "state"))
    assert len(runner.run(stop_event(t))) == 1
    assert runner.entry(t)["emitted"].keys() == {f"pid-{SURROGATE}"}  # read back exactly
    assert runner.run(stop_event(t)) == []  # so the unchanged open turn is not queued again
    t.simple_turn("next", "fine")
    assert [root(r)["input"] for r in runner.run(stop_event(t))][-1:] == ["next"]
    assert [root(r)["input"] for r in runner.latest().values()] == ["odd ids", "next"]
    queue_lines(tmp_path / "state")


def test_a_line_nested_too_deep_to_parse_is_skipped_not_fatal(tmp_path):
    """json.loads raises RecursionError (not ValueError) past Python's nesting limit: it used to
    escape the reader, so every run of the session failed and no later turn ever arrived."""
    t = Transcript(str(tmp_path / "proj" / "s.jsonl"))
    t.simple_turn("one", "first")
    t.raw(b'{"type":"user","message":{"role":"user","content":' + b"[" * 50000 + b"]" * 50000 + b"}}\n")
    t.simple_turn("two", "second")
    runner = HookRunner(str(tmp_path / "state"))
    assert [root(r)["input"] for r in runner.run(stop_event(t))] == ["one", "two"]
    assert any("skipped 1 unreadable line" in line for line in runner.logs)


def test_a_timestamp_past_what_utc_holds_costs_the_time_not_the_session(tmp_path):
    """ "9999-12-31T23:59:59-05:00" parses, then overflows on the way to UTC (OverflowError, which
    the grammar did not expect): the whole session used to fail on every run."""
    t = Transcript(str(tmp_path / "proj" / "s.jsonl"))
    t.simple_turn("one", "first")
    t.prompt("two", timestamp="9999-12-31T23:59:59-05:00")
    t.respond(text("second"))
    t.turn_duration()
    t.simple_turn("three", "third")
    runner = HookRunner(str(tmp_path / "state"))
    assert [root(r)["input"] for r in runner.run(stop_event(t))] == ["one", "two", "three"]


# ============================================================================ the writers never raise


def test_redactor_and_truncation_handle_surrogate_text():
    redactor = Redactor()
    secret = "sk-ant-api03-" + "A" * 40
    out, n = redactor.redact_text(f"{SURROGATE} key={secret} {SURROGATE}")
    assert n >= 1 and secret not in out
    record = {
        "trace": {"name": f"t{SURROGATE}", "metadata": {f"m{SURROGATE}": f"v{SURROGATE}"}, "tags": [f"x{SURROGATE}"]},
        "observations": [
            {
                "id": "1" * 16,
                "parent_id": None,
                "name": f"n{SURROGATE}",
                "input": {"password": f"hunter2{SURROGATE}", f"k{SURROGATE}": f"{SURROGATE}" * 20},
                "output": f"{SURROGATE}" * 150,
                "metadata": {},
                "status_message": f"s{SURROGATE}",
            }
        ],
    }
    rec = sanitize_record(record, redactor, max_chars=100)
    assert surrogates_in(rec) == []
    ob = rec["observations"][0]
    assert ob["input"] == {"password": "[REDACTED:secret-field]", "k\ufffd": "\ufffd" * 20}
    assert ob["output"].startswith("\ufffd" * 100 + "…[truncated: 150 chars, sha256 ")
    assert ob["metadata"]["output_truncated"]["original_length"] == 150
    assert rec["trace"] == {"name": "t\ufffd", "metadata": {"m\ufffd": "v\ufffd"}, "tags": ["x\ufffd"]}
    assert isinstance(record_rev({"a": SURROGATE}), str)  # never raises, whatever it is handed


def test_scrub_keeps_text_and_joins_surrogate_halves():
    assert scrub_text("plain") == "plain"
    assert scrub_text("h\u00e9llo 😀") == "h\u00e9llo 😀"
    assert scrub_text("a\ud83d\ude00b") == "a😀b"  # halves next to each other are one character
    assert scrub_text("\ude00\ud83d") == "\ufffd\ufffd"  # in the wrong order they are not
    assert scrub_surrogates({"k\udc00": ("x", 1, None, True, 2.5)}) == {"k\ufffd": ["x", 1, None, True, 2.5]}


def test_queue_writer_and_dead_letters_never_raise_on_surrogates(tmp_path):
    paths = Paths(str(tmp_path))
    os.makedirs(paths.locks)
    record = {"key": "turn:x", "trace": {"name": SURROGATE}, "observations": [{"input": {SURROGATE: SURROGATE}}]}
    store.queue_append(paths, [record])
    (entry,) = store.queue_read(paths.queue)
    assert entry.record["trace"]["name"] == "\ufffd" and entry.record["observations"][0]["input"] == {"\ufffd": "\ufffd"}
    pathlib.Path(paths.queue).read_bytes().decode("utf-8")
    store.dead_append(paths, [{"reason": f"bad {SURROGATE}"}])
    store.queue_remove(paths, {}, [{"reason": SURROGATE, "record": record}])
    dead = [json.loads(line) for line in pathlib.Path(paths.dead).read_text(encoding="utf-8").splitlines()]
    assert [d["reason"] for d in dead] == ["bad \ufffd", "\ufffd"]


def test_queue_reader_scrubs_an_escaped_surrogate_before_the_sender_sees_it(tmp_path):
    """The OTLP encoder drops (and logs) every attribute it cannot encode, yet the server says 2xx:
    a queue line holding "\\ud83d" (written by other means) would arrive without its input."""
    paths = Paths(str(tmp_path))
    line = json.dumps({"key": "turn:x", "trace": {"name": "a\ud83d"}, "observations": [{"input": "b\udc00"}]})
    assert "\\ud83d" in line
    pathlib.Path(paths.queue).write_text(line + "\n" + '{"key":"turn:y","trace":{},"observations":[],"x":"\\\\ud83d"}\n')
    first, second = store.queue_read(paths.queue)
    assert first.record["trace"]["name"] == "a\ufffd" and first.record["observations"][0]["input"] == "b\ufffd"
    assert second.record["x"] == "\\ud83d"  # an escaped backslash is text, left alone


def test_state_entry_with_surrogate_keys_reads_back_exactly(tmp_path):
    paths = Paths(str(tmp_path))
    os.makedirs(paths.locks)
    entry = {"emitted": {f"p{SURROGATE}": "rev"}, "cwd": f"/x/{SURROGATE}", "updated_epoch": 1e12}
    key = store.state_key(f"s{SURROGATE}", f"/p/{SURROGATE}.jsonl")
    store.update_state_entry(paths, key, entry)
    assert store.load_state(paths)["transcripts"][key] == entry


def test_reader_keeps_a_line_with_an_invalid_byte_and_skips_only_broken_json(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"type":"user","n":1,"t":"a\xffb"}\n{"type":"user","n":2\n{"type":"user","n":3,"t":"\\ud83d"}\n')
    bad: list = []
    with open(path, "rb") as f:
        rows = list(iter_rows(f, 0, bad_lines=bad))
    assert [(r.data["n"], r.data.get("t")) for r in rows] == [(1, "a\ufffdb"), (3, SURROGATE)]
    assert len(bad) == 1


# ============================================================================ a turn that cannot be read


@pytest.fixture
def breaks_on(monkeypatch):
    """Make turn_record fail for turns whose prompt holds `word` (a bug for some shape of turn)."""
    real = collect.turn_record

    def install(word: str):
        def turn_record(turn, ctx, event=None):
            if word in str(turn.prompt):
                raise TypeError(f"unsupported content shape in {word}")
            return real(turn, ctx, event)

        monkeypatch.setattr(collect, "turn_record", turn_record)

    return install


def test_a_turn_that_cannot_become_a_record_is_dead_lettered_and_the_session_goes_on(tmp_path, breaks_on):
    breaks_on("BROKEN")
    t = Transcript(str(tmp_path / "proj" / "s.jsonl"))
    t.simple_turn("first", "one")
    t.simple_turn("BROKEN second", "two")
    t.simple_turn("third", "three")
    runner = HookRunner(str(tmp_path / "state"))
    queued = runner.run(stop_event(t))
    assert [root(r)["input"] for r in queued] == ["first", "third"]
    dead_path = tmp_path / "state" / "dead_traces.jsonl"
    (letter,) = [json.loads(line) for line in dead_path.read_text().splitlines()]
    assert letter["kind"] == "unreadable-turn" and letter["session_id"] == t.session_id and letter["transcript_path"] == t.path
    broken_key = next(r["promptId"] for r in t.rows if r.get("message", {}).get("content") == "BROKEN second")
    assert letter["turn_number"] == 2 and letter["turn_key"] == broken_key
    assert letter["trace_id"] == trace_id_for(t.session_id, broken_key)
    with open(t.path, "rb") as f:
        f.seek(letter["start_offset"])
        assert b"BROKEN second" in f.read(letter["end_offset"] - letter["start_offset"])
    assert "TypeError: unsupported content shape in BROKEN" in letter["reason"]
    assert any(line.startswith("ERROR") and broken_key in line and "skipped" in line for line in runner.logs)
    # the cursor is past it: more events neither retry it nor dead-letter it again
    assert runner.run(stop_event(t)) == []
    t.simple_turn("fourth", "four")
    assert [root(r)["input"] for r in runner.run(stop_event(t))] == ["fourth"]
    assert len(dead_path.read_text().splitlines()) == 1
    # status says so, apart from the dead records `drain --retry-dead` can resend
    st = commands.collect_status(runner.settings)
    assert st["dead_letters"] == 1 and st["unreadable_turns"] == 1
    (warning,) = [w for w in st["warnings"] if "dead" in w or "turn(s)" in w]
    assert warning.startswith("1 turn(s) could not be made into traces and were skipped") and str(dead_path) in warning
    assert commands.retry_dead_letters(runner.paths) == 0 and len(dead_path.read_text().splitlines()) == 1


def test_an_open_trailing_turn_that_cannot_be_read_is_dead_lettered_once_per_version(tmp_path, breaks_on):
    breaks_on("BROKEN")
    t = Transcript(str(tmp_path / "proj" / "s.jsonl"))
    t.simple_turn("first", "one")
    t.prompt("BROKEN open")
    t.respond(text("working"))
    runner = HookRunner(str(tmp_path / "state"))
    runner.run(stop_event(t))
    runner.run(stop_event(t))
    dead_path = tmp_path / "state" / "dead_traces.jsonl"
    assert len(dead_path.read_text().splitlines()) == 1
    t.respond(text("still working"))  # the turn grew: its new version is tried (and recorded) again
    runner.run(stop_event(t))
    assert len(dead_path.read_text().splitlines()) == 2
    t.simple_turn("next", "fine")
    assert [root(r)["input"] for r in runner.run(stop_event(t))] == ["next"]


# ============================================================================ backfill


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    h.mkdir()
    return h


def test_backfill_reads_every_file_past_one_with_lone_surrogates(home):
    """It used to stop at that file with a traceback: the files after it were never read."""
    a, b, c = make_project(home, "proj", 3, 2)
    b.prompt("write it")
    call = tool_use("Write", {"file_path": f"/tmp/{SURROGATE}", "content": SURROGATE})
    b.respond(text("ok"), call)
    b.tool_results((call["id"], f"wrote {SURROGATE}"))
    b.respond(text("done"))
    b.turn_duration()
    out = run_cli(home, "backfill")
    assert out.returncode == 0, out.stderr
    queued = queue(home)
    assert len(queued) == 7 and {r["trace"]["session_id"] for r in queued} == {a.session_id, b.session_id, c.session_id}
    queue_lines(home / ".claude" / "state")


def test_backfill_reports_and_skips_a_file_it_cannot_read_and_goes_on(home, monkeypatch, capsys):
    from claude_code_langfuse import backfill

    sessions = make_project(home, "proj", 3, 2)
    real = backfill.collect_records

    def collect_records(event, entry, settings, redactor, log=None, sink=None, **kw):
        if event.transcript_path == sessions[1].path:
            raise OSError(5, "Input/output error")
        return real(event, entry, settings, redactor, log, sink=sink, **kw)

    monkeypatch.setattr(backfill, "collect_records", collect_records)
    monkeypatch.setattr(backfill, "wake_worker", lambda *a: None)
    settings = Settings(user_id="tester", state_dir=str(home / "state"), base_url="http://127.0.0.1:9")
    rc = backfill.cmd_backfill(settings, None, None, False, roots=[str(home / ".claude" / "projects")])
    out = capsys.readouterr()
    assert rc == 1
    assert f"backfill: {sessions[1].path} could not be read (OSError: [Errno 5] Input/output error); skipped" in out.err
    assert "1 file(s) could not be read and were skipped" in out.out
    queued = queue_lines(home / "state")
    assert {r["trace"]["session_id"] for r in queued} == {sessions[0].session_id, sessions[2].session_id}
    # its cursor did not move: the next backfill (or a live event) reads it
    monkeypatch.setattr(backfill, "collect_records", real)
    assert backfill.cmd_backfill(settings, None, None, False, roots=[str(home / ".claude" / "projects")]) == 0
    assert {r["trace"]["session_id"] for r in queue_lines(home / "state")} == {s.session_id for s in sessions}


def test_backfill_reports_unreadable_turns(home, breaks_on, capsys, monkeypatch):
    from claude_code_langfuse import backfill

    monkeypatch.setattr(backfill, "wake_worker", lambda *a: None)
    t = Transcript(str(home / ".claude" / "projects" / "-p" / "s1.jsonl"), session_id="s1", clock=Clock())
    t.simple_turn("BROKEN", "x")
    t.simple_turn("fine", "y")
    breaks_on("BROKEN")
    settings = Settings(user_id="tester", state_dir=str(home / "state"), base_url="http://127.0.0.1:9")
    assert backfill.cmd_backfill(settings, None, None, False, roots=[str(home / ".claude" / "projects")]) == 0
    assert "1 turn(s) could not be made into traces and were skipped" in capsys.readouterr().out
    assert [root(r)["input"] for r in queue_lines(home / "state")] == ["fine"]
    assert json.loads((home / "state" / "dead_traces.jsonl").read_text())["kind"] == "unreadable-turn"


def test_log_lines_holding_a_surrogate_are_written(tmp_path, monkeypatch):
    from claude_code_langfuse import config

    monkeypatch.setattr(config, "_LOGGER", None)
    before = list(logging.getLogger("claude_code_langfuse").handlers)
    log = config.get_logger(Settings(state_dir=str(tmp_path)))
    added = [h for h in log.handlers if h not in before]
    try:
        log.error("path /tmp/%s.txt", SURROGATE)
        for h in added:
            h.flush()
        assert "path /tmp/\\ud83d.txt" in (tmp_path / "langfuse_hook.log").read_text()
    finally:
        for h in added:
            log.removeHandler(h)
            h.close()
