"""Property-based tests over the reader, the turn grammar and the queue (hypothesis).

The promise: every complete turn is queued exactly once (by key, the newest version wins, as
`delivery.drain_queue` picks it) and no later turn is affected by a bad one, whatever the chunk
boundaries the transcript is written in, whatever corruption it holds (invalid UTF-8, lone
surrogates, truncated and duplicated lines, companion lines out of order, the file rewritten
under the cursor), and wherever the worker is killed (between the queue append and the cursor,
or in the middle of writing the queue).

Each test has a fixed example budget and derandomized generation, so CI runs the same examples
every time (well under a minute on two cores).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import types
from typing import NamedTuple

import pytest
from claude_code_langfuse import collect, delivery, store, transcript, turns
from claude_code_langfuse.config import ensure_state_dir
from claude_code_langfuse.files import Paths
from claude_code_langfuse.records import TraceContext, observation_id, trace_id_for, turn_record
from claude_code_langfuse.transcript import iter_rows
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from transcript_factory import Clock, HookRunner, Transcript, text, tool_use

PROFILE = dict(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck), print_blob=True)

SURROGATE = "\ud83d"
MARK = "~M~"  # a spot inside a JSON string where byte-level corruption can go
SESSION = "5e55a0e1-0000-4000-8000-00000000abcd"


class Crash(BaseException):
    """A kill -9 of the worker: nothing after it runs (finally blocks aside, like a dying process's fds)."""


# ============================================================================ sessions


class TurnSpec(NamedTuple):
    kind: str  # simple | tool | notification
    surrogate: str  # "" | prompt | input | result | answer
    corrupt: str  # "" | invalid_utf8 | raw_surrogate | truncate | duplicate | companion_early
    pick: float  # which line / which spot the corruption takes, and where a cut goes


class TurnInfo(NamedTuple):
    key: str
    start: int
    end: int
    prompt_line: bytes
    companion_line: bytes


turn_specs = st.builds(
    TurnSpec,
    kind=st.sampled_from(["simple", "tool", "notification"]),
    surrogate=st.sampled_from(["", "", "prompt", "input", "result", "answer"]),
    corrupt=st.sampled_from(["", "", "", "invalid_utf8", "raw_surrogate", "truncate", "duplicate", "companion_early"]),
    pick=st.floats(0, 1, allow_nan=False),
)


@st.composite
def sessions(draw, min_turns=1, max_turns=6):
    specs = draw(st.lists(turn_specs, min_size=min_turns, max_size=max_turns))
    fixed = []
    for i, s in enumerate(specs):
        if s.corrupt == "companion_early" and (i == 0 or s.kind != "notification"):
            s = s._replace(corrupt="duplicate")
        fixed.append(s)
    for i, s in enumerate(fixed):  # a moved companion lands in the turn before: that one stays clean
        if s.corrupt == "companion_early":
            fixed[i - 1] = fixed[i - 1]._replace(corrupt="")
    return fixed, draw(st.booleans())


def _with(spec: TurnSpec, where: str, words: str) -> str:
    return f"{words} {SURROGATE}" if spec.surrogate == where else words


def write_session(path: str, specs: list[TurnSpec], open_last: bool) -> list[TurnInfo]:
    """The session as Claude Code 2.1.328 writes it; where each turn's bytes are."""
    t = Transcript(path, session_id=SESSION, clock=Clock())
    infos = []
    for i, spec in enumerate(specs):
        start = t.size()
        companion = b""
        if spec.kind == "notification":
            row = t.task_notification(f"task{i}", _with(spec, "prompt", f"summary {i} {MARK}"))
            companion = Transcript.line(next(r for r in reversed(t.rows) if r.get("turnCompanion")))
        else:
            row = t.prompt(_with(spec, "prompt", f"question {i} {MARK}"))
        last = i == len(specs) - 1
        if spec.kind == "tool" or (last and open_last):
            call = tool_use("Bash", {"command": f"ls {i}", "description": _with(spec, "input", f"list {MARK}")})
            t.respond(text("Let me look."), call)
            if last and open_last:
                infos.append(TurnInfo(row["promptId"], start, t.size(), Transcript.line(row), companion))
                break  # still running: no result, no answer yet
            t.tool_results((call["id"], _with(spec, "result", f"a.txt {MARK}")))
        t.respond(text(_with(spec, "answer", f"answer {i} {MARK}")))
        t.stop_hook_summary()
        t.turn_duration()
        t.end_noise()
        infos.append(TurnInfo(row["promptId"], start, t.size(), Transcript.line(row), companion))
    return infos


def _lines(data: bytes, start: int, end: int) -> list[tuple[int, int]]:
    out, pos = [], start
    while pos < end:
        nl = data.index(b"\n", pos)
        out.append((pos, nl + 1))
        pos = nl + 1
    return out


def _grammar_line(line: bytes) -> bool:
    try:
        return json.loads(line).get("type") in ("user", "assistant", "system")
    except ValueError:
        return False


def corrupt(data: bytes, infos: list[TurnInfo], specs: list[TurnSpec]) -> tuple[bytes, set[str]]:
    """Apply each turn's corruption to its own bytes (last turn first, so earlier offsets hold)."""
    touched: set[str] = set()
    for i in reversed(range(len(infos))):
        spec, info = specs[i], infos[i]
        if not spec.corrupt:
            continue
        touched.add(info.key)
        lines = _lines(data, info.start, info.end)
        if spec.corrupt in ("invalid_utf8", "raw_surrogate"):
            spots = [j for j in range(info.start, info.end) if data.startswith(MARK.encode(), j)]
            j = spots[int(spec.pick * (len(spots) - 1))]
            bad = b"\xff\xc3(" if spec.corrupt == "invalid_utf8" else b"\xed\xa0\xbd"
            data = data[:j] + bad + data[j + len(MARK) :]
        elif spec.corrupt == "truncate":
            cands = [(a, b) for a, b in lines if data[a:b] != info.prompt_line]
            a, b = cands[int(spec.pick * (len(cands) - 1))]
            cut = a + 1 + int(spec.pick * (b - a - 3))  # keep at least "{", drop at least the closing "}"
            data = data[:cut] + b"\n" + data[b:]
        elif spec.corrupt == "duplicate":
            a, b = lines[int(spec.pick * (len(lines) - 1))]
            data = data[:b] + data[a:b] + data[b:]
        elif spec.corrupt == "companion_early":
            a = data.index(info.companion_line, info.start)
            data = data[:a] + data[a + len(info.companion_line) :]
            prev = infos[i - 1]
            last = [(x, y) for x, y in _lines(data, prev.start, prev.end) if _grammar_line(data[x:y])][-1]
            data = data[: last[0]] + info.companion_line + data[last[0] :]  # the turn before must come out as if clean
    return data, touched


# ============================================================================ running the worker


def stop(path: str) -> dict:
    return {
        "session_id": SESSION,
        "transcript_path": path,
        "cwd": "/home/dev/proj",
        "hook_event_name": "Stop",
        "permission_mode": "default",
    }


def one_shot(state_dir: str, path: str) -> dict[str, dict]:
    """What one worker run over the whole final file queues: key -> record."""
    runner = HookRunner(state_dir)
    runner.run(stop(path))
    return {k: _strip(r) for k, r in runner.latest().items()}


def _strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "queued_at"}


def as_stored(record: dict) -> dict:
    """What Langfuse holds for a record: the trace, and each observation by id."""
    return {"trace": record["trace"], "observations": {o["id"]: o for o in record["observations"]}}


class FakeSender:
    """Stands in for sender.Sender, with Langfuse's semantics: the trace and every observation are
    upserted by id (the last version sent wins), and nothing sent is ever deleted."""

    def __init__(self, server: dict, outcomes: list):
        self.server, self.outcomes = server, outcomes

    def send(self, record: dict):
        ok = self.outcomes.pop(0) if self.outcomes else True
        if not ok:
            return types.SimpleNamespace(outcome="retry", http_status=503, detail="scripted 503")
        stored = self.server.setdefault(record["key"], {"trace": None, "observations": {}})
        stored["trace"] = record["trace"]
        stored["observations"].update(as_stored(record)["observations"])
        return types.SimpleNamespace(outcome="accepted", http_status=200, detail="ok")

    def close(self):
        pass


@contextlib.contextmanager
def offline_delivery(server: dict, outcomes: list):
    """drain_queue as the worker runs it, against a fake sender (no SDK, no network)."""
    fake = types.ModuleType("claude_code_langfuse.sender")
    fake.open_sender = lambda settings: FakeSender(server, outcomes)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "claude_code_langfuse.sender", fake)
        mp.setattr(delivery, "reachable", lambda *a, **k: (True, ""))
        mp.setattr(os, "fsync", lambda fd: None)  # durability is not what these properties are about; speed is
        yield


@contextlib.contextmanager
def kill_point(kind: str, cut: float):
    """Kill the worker between the queue append and the cursor, or in the middle of the queue write."""
    with pytest.MonkeyPatch.context() as mp:
        if kind == "after_queue":

            def update_state_entry(*a, **k):
                raise Crash()

            mp.setattr(collect, "update_state_entry", update_state_entry)
        elif kind == "mid_queue_write":
            real = store._append_lines

            def _append_lines(path, lines):
                if not path.endswith("pending_traces.jsonl"):
                    return real(path, lines)
                data = b"".join(lines)
                with open(path, "ab") as f:
                    f.write(data[: max(1, int(cut * (len(data) - 1)))])  # never the final newline
                raise Crash()

            mp.setattr(store, "_append_lines", _append_lines)
        yield


def settle(runner: HookRunner, path: str, server: dict) -> None:
    """The last events: read everything, deliver everything."""
    runner.run(stop(path))
    for _ in range(3):
        with offline_delivery(server, []):
            delivery.drain_queue(runner.settings, runner.logger)
    assert runner.queue() == [], "records left in the queue with a healthy server"


# ============================================================================ the whole pipeline


steps = st.lists(
    st.tuples(
        st.floats(0, 1, allow_nan=False),  # where the next write stops (chunk boundary, often mid-line)
        st.sampled_from(["run", "run", "run", "skip", "after_queue", "mid_queue_write", "replace", "rewind", "transient"]),
        st.floats(0, 1, allow_nan=False),  # where a kill cuts the queue write / how far a rewind goes
        st.lists(st.booleans(), max_size=3),  # delivery now? and what the server answers
    ),
    min_size=1,
    max_size=10,
)


def _transient_line(data: bytes, pos: int) -> bytes:
    """An assistant line Claude Code writes and then drops (a stream that failed): a copy of one
    already written, under a new message id."""
    for a, b in reversed(_lines(data, 0, pos)):
        row = json.loads(data[a:b])
        if row.get("type") == "assistant":
            row["message"] = dict(row["message"], id="msg_dropped", content=[{"type": "text", "text": "half an answer"}])
            row["uuid"] = "dropped-" + row["uuid"][8:]
            return Transcript.line(row)
    return b""


def play(data: bytes, plan: list, tmp: str) -> tuple[dict, HookRunner, str]:
    """Write `data` in the planned pieces with worker runs, kills, deliveries and rewrites between."""
    path = os.path.join(tmp, "live", "s.jsonl")
    os.makedirs(os.path.dirname(path))
    open(path, "wb").close()
    runner = HookRunner(os.path.join(tmp, "state"), public_key="pk-lf-x", secret_key="sk-lf-x")
    ensure_state_dir(runner.paths.dir)  # as the worker does before anything else
    server: dict = {}
    written = 0
    for frac, action, cut, deliveries in plan:
        upto = written + int(frac * (len(data) - written))
        with open(path, "ab") as f:
            f.write(data[written:upto])
        written = upto
        complete = data.rfind(b"\n", 0, written) + 1  # the part that is whole lines
        if action == "replace":  # the same bytes under a new inode (an editor, a sync tool)
            with open(path + ".new", "wb") as f:
                f.write(data[:written])
            os.replace(path + ".new", path)
        elif action == "rewind" and complete:  # cut back to an earlier line and written again
            back = _lines(data, 0, complete)[int(cut * (len(_lines(data, 0, complete)) - 1))][0]
            os.truncate(path, back)
            runner.run(stop(path))
            with open(path, "ab") as f:
                f.write(data[back:written])
        elif action == "transient" and complete == written and written:
            extra = _transient_line(data, written)
            with open(path, "ab") as f:
                f.write(extra)
            runner.run(stop(path))
            os.truncate(path, written)
        if action in ("after_queue", "mid_queue_write"):
            with kill_point(action, cut), contextlib.suppress(Crash):
                runner.run(stop(path))
        elif action != "skip":  # skip: the hook was killed before it wrote its news
            runner.run(stop(path))
        if deliveries and deliveries[0]:
            with offline_delivery(server, list(deliveries[1:])):
                delivery.drain_queue(runner.settings, runner.logger)
    with open(path, "ab") as f:
        f.write(data[written:])
    settle(runner, path, server)
    return server, runner, path


def surrogates_in(obj) -> list[str]:
    if isinstance(obj, str):
        return [obj] if any(0xD800 <= ord(c) <= 0xDFFF for c in obj) else []
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in surrogates_in(k) + surrogates_in(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in surrogates_in(v)]
    return []


@settings(max_examples=60, **PROFILE)
@given(session=sessions(), plan=steps)
@example(  # failed before the fix (a lone surrogate in a tool input stopped the session for good); also a
    # truncated line in a turn, a kill mid queue write, then the file rewound under the cursor
    session=([TurnSpec("tool", "input", "", 0.0), TurnSpec("simple", "", "truncate", 0.5), TurnSpec("notification", "", "", 0.0)], False),
    plan=[(0.4, "mid_queue_write", 0.5, [True]), (0.5, "rewind", 0.3, [True, False]), (0.7, "run", 0.0, [])],
)
@example(  # a companion line written before the previous turn's end, the file cut right after it
    session=([TurnSpec("simple", "", "", 0.0), TurnSpec("notification", "answer", "companion_early", 0.0)], True),
    plan=[(0.55, "run", 0.0, [True]), (0.6, "after_queue", 0.0, []), (0.8, "transient", 0.0, [True])],
)
def test_every_complete_turn_arrives_once_whatever_the_chunks_kills_and_corruption(session, plan):
    specs, open_last = session
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "fsync", lambda fd: None)
        clean_path = os.path.join(tmp, "clean", "s.jsonl")
        infos = write_session(clean_path, specs, open_last)
        with open(clean_path, "rb") as f:
            clean = f.read()
        data, touched = corrupt(clean, infos, specs)
        bad_path = os.path.join(tmp, "bad", "s.jsonl")
        os.makedirs(os.path.dirname(bad_path))
        with open(bad_path, "wb") as f:
            f.write(data)

        expected_clean = one_shot(os.path.join(tmp, "s1"), clean_path)
        expected = one_shot(os.path.join(tmp, "s2"), bad_path)
        # nothing said is lost: each turn's prompt, tool call, result, answer and companion line
        for i, (spec, info) in enumerate(zip(specs, infos, strict=True)):
            said = json.dumps(expected_clean[f"turn:{trace_id_for(SESSION, info.key)}"], ensure_ascii=False)
            words = [f"summary {i}" if spec.kind == "notification" else f"question {i}"]
            words += ["tools-used-before-summary"] if spec.kind == "notification" else []
            if open_last and i == len(specs) - 1:
                words += [f"ls {i}"]  # still running: the call, no result or answer yet
            else:
                words += ([f"ls {i}", "a.txt"] if spec.kind == "tool" else []) + [f"answer {i}"]
            assert [w for w in words if w not in said] == []
        # every turn is there, clean or not; one bad turn changes nothing in any other turn
        assert len(expected_clean) == len(specs)
        assert expected.keys() == expected_clean.keys()
        assert expected.keys() == {f"turn:{trace_id_for(SESSION, info.key)}" for info in infos}
        for info in infos:
            if info.key not in touched:
                key = f"turn:{trace_id_for(SESSION, info.key)}"
                assert expected[key] == expected_clean[key], f"turn {info.key} was changed by a bad line elsewhere"
        assert surrogates_in(expected) == []

        # written in pieces, with kills, rewrites and deliveries between: Langfuse ends with exactly that
        server, runner, live = play(data, plan, tmp)
        assert server.keys() == expected.keys()
        for key, record in expected.items():
            want = as_stored(record)
            assert server[key]["trace"] == want["trace"]
            got = server[key]["observations"]
            assert {i: got[i] for i in want["observations"]} == want["observations"]
            # Known limit: an observation sent and then gone from the file (a line Claude Code
            # dropped after a failed stream, read in between) stays in Langfuse, which deletes nothing.
            phantom = {observation_id(key[len("turn:") :], "gen", "msg_dropped")} if any(a == "transient" for _, a, _, _ in plan) else set()
            assert got.keys() - want["observations"].keys() <= phantom
        assert not [line for line in runner.logs if line.startswith("ERROR") and "could not" in line]


# ============================================================================ the grammar


@settings(max_examples=60, **PROFILE)
@given(session=sessions(min_turns=2), start_turn=st.integers(0, 5))
@example(  # failed before the fix: a prompt line with an invalid byte was dropped, its turn merged into the one before
    session=([TurnSpec("simple", "", "", 0.0), TurnSpec("simple", "", "invalid_utf8", 0.5)], False), start_turn=1
)
def test_grammar_from_any_turn_start_gives_the_same_turns(session, start_turn):
    """The worker re-reads from the trailing turn's first line: the grammar must give that turn,
    and every later one, exactly as a read from the start does (held companion lines included)."""
    specs, open_last = session
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s.jsonl")
        infos = write_session(path, specs, open_last)
        with open(path, "rb") as f:
            data, _ = corrupt(f.read(), infos, specs)
        with open(path, "wb") as f:
            f.write(data)

        def records(offset: int) -> list[dict]:
            with open(path, "rb") as f:
                out = list(turns.group_turns(iter_rows(f, offset)))
            ctx = TraceContext(SESSION, "u", "p", 1, "1" * 32)
            return [json.dumps(turn_record(t, ctx), sort_keys=True) for t in out], out

        whole, whole_turns = records(0)
        assert len(whole_turns) == len(specs)
        k = min(start_turn, len(whole_turns) - 1)
        tail, _ = records(whole_turns[k].start_offset)
        assert tail == whole[k:]


# ============================================================================ the reader


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
lines_st = st.lists(
    st.one_of(
        st.builds(lambda v: ("row", {"type": "user", "v": v}), json_values),
        st.builds(lambda v: ("row", {"type": "assistant", "t": v + SURROGATE}), st.text(max_size=5)),
        st.just(("bad", b'{"type":"user","cut')),  # truncated
        st.just(("bad", b"[1, 2]")),  # JSON, but not an object
        st.just(("bytes", b'{"type":"user","t":"a\xffb"}')),  # invalid UTF-8: kept, as U+FFFD
        st.just(("bytes", b'{"type":"user","t":"\xed\xa0\xbd"}')),  # a surrogate written raw
        st.just(("blank", b"   ")),
    ),
    max_size=25,
)


@settings(max_examples=100, **PROFILE)
@given(lines=lines_st, cuts=st.lists(st.floats(0, 1, allow_nan=False), max_size=8), chunk=st.sampled_from([1, 3, 7, 64, 1 << 20]))
@example(lines=[("bytes", b'{"type":"user","t":"a\xffb"}')], cuts=[0.5], chunk=3)  # failed before the fix: the line was dropped
def test_reader_yields_each_complete_line_once_whatever_the_chunks(lines, cuts, chunk):
    encoded = []
    for kind, value in lines:
        if kind == "row":
            encoded.append(Transcript.line(value))
        else:
            encoded.append(value + b"\n")
    data = b"".join(encoded)
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setattr(transcript, "READ_CHUNK", chunk)
        path = os.path.join(tmp, "t.jsonl")
        open(path, "wb").close()
        seen, offset, written = [], 0, 0
        for frac in sorted(cuts) + [1.0]:
            upto = max(written, int(frac * len(data)))
            with open(path, "ab") as f:
                f.write(data[written:upto])
            written = upto
            with open(path, "rb") as f:
                rows = list(iter_rows(f, offset))
            assert all(r.end <= data.rfind(b"\n", 0, written) + 1 for r in rows), "a half-written line was read"
            seen += rows
            if rows:
                offset = rows[-1].end
        starts = [r.start for r in seen]
        assert len(starts) == len(set(starts)), "a line was read twice"
        expected, pos = [], 0
        for (kind, _value), line in zip(lines, encoded, strict=True):
            if kind in ("row", "bytes"):
                expected.append((pos, json.loads(line.decode("utf-8", "replace")) if b"\xff" in line else json.loads(line)))
            pos += len(line)
        assert [(r.start, r.data) for r in seen] == expected
        # a range read (how a finished turn is read again) gives exactly the lines in the range
        if len(seen) >= 2:
            a, b = seen[0].start, seen[-1].start
            with open(path, "rb") as f:
                assert [r.start for r in iter_rows(f, a, b)] == [s for s in starts if a <= s < b]


# ============================================================================ the queue


def _record(key: str, rev: str, text_: str = "") -> dict:
    return {"key": key, "rev": rev, "trace": {"name": text_}, "observations": []}


queue_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("append"), st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from([SURROGATE, "", "é"])), min_size=1, max_size=3)
        ),
        st.tuples(st.just("torn"), st.floats(0, 1, allow_nan=False)),
        # a delivery: which keys the server accepts, and what the worker appends while it sends
        st.tuples(st.just("deliver"), st.tuples(st.lists(st.booleans(), max_size=4), st.lists(st.sampled_from("abc"), max_size=2))),
    ),
    max_size=12,
)


@settings(max_examples=100, **PROFILE)
@given(ops=queue_ops)
def test_queue_keeps_every_version_until_it_or_a_newer_one_is_delivered(ops):
    """queue_append / queue_read / queue_remove against a model, with torn writes (a killed appender),
    surrogate text, and deliveries that take the newest version of each key as drain_queue does."""
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "fsync", lambda fd: None)
        paths = Paths(tmp)
        os.makedirs(paths.locks)
        model: list[tuple[str, str]] = []  # (key, rev) of the records in the queue, in file order
        n = 0

        def append(items):
            nonlocal n, model
            batch = []
            for key, extra in items:
                n += 1
                batch.append(_record(key, f"r{n}", f"t{extra}"))
            store.queue_append(paths, batch)
            model += [(r["key"], r["rev"]) for r in batch]

        for op, arg in ops:
            if op == "append":
                append(arg)
            elif op == "torn":
                line = store.json_line(dict(_record("z", "torn"), queued_at=store.now_iso()))
                with open(paths.queue, "ab") as f:
                    f.write(line[: max(1, int(arg * (len(line) - 2)))])  # killed before the closing brace
            else:
                entries = store.queue_read(paths.queue)
                assert all(e.record is not None or e.error for e in entries)
                assert [(e.record["key"], e.record["rev"]) for e in entries if e.record] == model
                assert all(e.record["trace"]["name"] in ("t", "t\ufffd", "té") for e in entries if e.record)
                latest: dict[str, dict] = {}
                for e in entries:
                    if e.record is not None:
                        seen = latest.get(e.record["key"])
                        if seen is None or e.record["queued_at"] >= seen["queued_at"]:
                            latest[e.record["key"]] = e.record
                oks, during = arg
                done = {k: r["rev"] for (k, r), ok in zip(sorted(latest.items()), oks + [True] * 3, strict=False) if ok}
                corrupt = [
                    {"raw": e.raw.decode("utf-8", "replace")} for e in entries if e.record is None and e.error != "incomplete last line"
                ]
                if during:
                    append([(key, "") for key in during])  # newer versions, queued while the older ones were sent: they stay
                store.queue_remove(paths, done, corrupt)
                for key, rev in done.items():  # that version and every older one of its key leave
                    last = max(i for i, (k, r) in enumerate(model) if k == key and r == rev)
                    model = [(k, r) for i, (k, r) in enumerate(model) if not (k == key and i <= last)]
                # the newest version of each key was taken: the one appended last
                for key in done:
                    assert done[key] == max(
                        (r for k, r in [(e.record["key"], e.record["rev"]) for e in entries if e.record] if k == key),
                        key=lambda r: int(r[1:]),
                    )
        entries = store.queue_read(paths.queue)
        assert [(e.record["key"], e.record["rev"]) for e in entries if e.record] == model
        assert all(e.raw.endswith(b"\n") for e in entries[:-1])  # only a torn last line may be incomplete
        for e in entries:
            e.raw.decode("utf-8")  # whole records and torn ones alike: valid UTF-8, whatever text they held
