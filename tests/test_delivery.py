"""Delivery end to end: nothing lost, nothing duplicated, never slowing Claude Code down.

The hook runs the way Claude Code runs it: a separate `python hooks/langfuse_hook.py` process
with a Stop / SubagentStop event on stdin and a private HOME and state folder. It starts the
detached sender itself; `drain` and `status --json` run as the user would run them. The
Langfuse side is the loopback stand-in (tests/langfuse_standin.py), switched between failure
modes while the real sender talks to it.

Every scenario ends with the same proof: the stand-in's deduplicated observations hold each
turn of the transcript exactly once, under the trace id the transcript dictates, and the
queue is empty.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable

import pytest
from langfuse_standin import LangfuseStandin
from transcript_factory import Transcript, stop_event, subagent_stop_event, text, tool_use

HOOK = str(pathlib.Path(__file__).resolve().parent.parent / "hooks" / "langfuse_hook.py")
WAIT_S = 25.0  # upper bound of every poll; a pass never comes near it


# ------------------------------------------------------------------------------ expectations


def _trace_id(session_id: str, turn_key: str) -> str:
    # docs/design.md, "Ids": derived here on purpose, not imported from the hook
    return hashlib.sha256(f"{session_id}:{turn_key}".encode()).hexdigest()[:32]


def _obs_id(trace_id: str, kind: str, natural: str) -> str:
    return hashlib.sha256(f"{trace_id}:{kind}:{natural}".encode()).hexdigest()[:16]


def expected_turns(t: Transcript, agents: dict[str, Transcript] | None = None) -> dict[str, dict]:
    """trace id -> {"root": root observation id, "ids": observation ids the turn must deliver}.

    Read from the lines the test wrote: a prompt opens a turn (key = its promptId), every API
    response is a generation, every tool_use a tool, an Agent call with a subagent transcript
    an agent observation with that transcript's generations and tools below it.
    """
    agents = agents or {}
    turns: dict[str, dict] = {}
    current = ""

    def add_responses(rows: list[dict], tid: str) -> None:
        for row in rows:
            if row.get("type") != "assistant":
                continue
            message = row["message"]
            turns[tid]["ids"].add(_obs_id(tid, "gen", message["id"]))
            for block in message["content"]:
                if block.get("type") != "tool_use":
                    continue
                turns[tid]["ids"].add(_obs_id(tid, "tool", block["id"]))
                agent = agents.get(block["id"])
                if agent is not None:
                    turns[tid]["ids"].add(_obs_id(tid, "agent", agent.agent_id))
                    add_responses(agent.rows, tid)

    for row in t.rows:
        if row.get("type") == "user" and "origin" in row and row.get("promptId"):
            current = _trace_id(t.session_id, row["promptId"])
            root = _obs_id(current, "root", row["promptId"])
            turns[current] = {"root": root, "ids": {root}}
        elif current:
            add_responses([row], current)
    return turns


def assert_delivered_exactly_once(standin: LangfuseStandin, expected: dict[str, dict]) -> None:
    traces = standin.traces()
    assert set(traces) == set(expected), (
        f"trace ids differ: missing {sorted(set(expected) - set(traces))}, unexpected {sorted(set(traces) - set(expected))}"
    )
    for tid, want in expected.items():
        got = {o.id: o for o in traces[tid]}
        missing = want["ids"] - set(got)
        assert not missing, f"trace {tid} lacks observations {sorted(missing)}"
        roots = [o.id for o in traces[tid] if o.parent_id is None]
        assert roots == [want["root"]], f"trace {tid} must have exactly its one root, has {roots}"
        extra = [o for oid, o in got.items() if oid not in want["ids"]]
        assert all(o.type == "event" for o in extra), [(o.type, o.name) for o in extra]
    # one API response is one generation in one trace, never split over two trace ids
    traces_of_message: dict[str, set[str]] = defaultdict(set)
    for o in standin.observations():
        if o.type == "generation":
            traces_of_message[o.metadata.get("message_id")].add(o.trace_id)
    doubled = {m: sorted(t) for m, t in traces_of_message.items() if len(t) > 1}
    assert not doubled, f"generations under two trace ids: {doubled}"


def assert_resends_identical(standin: LangfuseStandin) -> None:
    """A span received more than once came with the same ids, times and content each time."""
    copies: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for span in list(standin.spans):
        copies[(span["trace_id"], span["span_id"])].append(span)
    for key, spans in copies.items():
        first = spans[0]
        for other in spans[1:]:
            for field in ("parent_span_id", "name", "start_ns", "end_ns", "attributes"):
                assert other[field] == first[field], f"resend of {key} changed {field}"


def wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT_S) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


# ------------------------------------------------------------------------------ the rig


class Rig:
    """One user's machine: HOME, state folder, transcripts, and the hook run as Claude Code runs it."""

    def __init__(self, tmp_path: pathlib.Path, standin: LangfuseStandin):
        self.tmp = tmp_path
        self.standin = standin
        self.home = tmp_path / "home"
        self.state = tmp_path / "state"
        self.projects = self.home / ".claude" / "projects" / "-home-dev-proj"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.home),
            "CC_LANGFUSE_STATE_DIR": str(self.state),
            "CC_LANGFUSE_CONFIG": str(tmp_path / "config.json"),
            "CC_LANGFUSE_PUBLIC_KEY": standin.public_key,
            "CC_LANGFUSE_SECRET_KEY": standin.secret_key,
            "CC_LANGFUSE_BASE_URL": standin.base_url,
            "CC_LANGFUSE_USER_ID": "tester",
            "CC_LANGFUSE_TIMEOUT": "2",
            # the worker exits after a failed send (these tests drive each retry with an event or
            # `drain`); the worker's own retries are tested with "600", the default
            "CC_LANGFUSE_RETRY_FOR": "0",
        }

    # -- transcripts
    def transcript(self) -> Transcript:
        return Transcript(str(self.projects / f"{uuid.uuid4()}.jsonl"))

    # -- processes
    def _env(self, extra: dict) -> dict:
        return {**self.env, **extra}

    def hook(self, event: dict, **env: str) -> subprocess.CompletedProcess:
        """One hook run; Claude Code needs exit 0 and nothing on stdout."""
        proc = subprocess.run(
            [sys.executable, "-I", HOOK], input=json.dumps(event).encode(), env=self._env(env), capture_output=True, timeout=WAIT_S
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == b""
        self.wait_read()
        return proc

    def wait_read(self) -> None:
        """The worker has read every hook event into the queue (sending may still be under way)."""
        wait_for(lambda: not [n for n in os.listdir(self.state / "inbox") if n.endswith(".json")], "the worker to read the events")

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, HOOK, *args], env=self._env(env), capture_output=True, text=True, timeout=90)

    def status(self, **env: str) -> dict:
        proc = self.cli("status", "--json", **env)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def drain(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        proc = self.cli("drain", *args, **env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "0 left in the queue" in proc.stdout, proc.stdout
        return proc

    def sender_pids(self) -> list[int]:
        """Live worker processes of this state folder (ours: found by their command and environment)."""
        mine = f"CC_LANGFUSE_STATE_DIR={self.state}".encode()
        pids = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
                if HOOK.encode() not in cmd or b"worker" not in cmd:
                    continue
                with open(f"/proc/{name}/environ", "rb") as f:
                    if mine not in f.read().split(b"\0"):
                        continue
            except OSError:
                continue
            pids.append(int(name))
        return pids

    def wait_sender_idle(self) -> None:
        wait_for(lambda: not self.sender_pids(), "the sender to exit")

    def kill_senders(self) -> None:
        for pid in self.sender_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # -- files
    @property
    def queue_path(self) -> pathlib.Path:
        return self.state / "pending_traces.jsonl"

    @property
    def dead_path(self) -> pathlib.Path:
        return self.state / "dead_traces.jsonl"

    def queue_lines(self) -> list[bytes]:
        if not self.queue_path.exists():
            return []
        return [line for line in self.queue_path.read_bytes().splitlines() if line.strip()]

    def queued_keys(self) -> set[str]:
        return {json.loads(line)["key"] for line in self.queue_lines()}

    def log_lines(self) -> list[str]:
        log = self.state / "langfuse_hook.log"
        return log.read_text(encoding="utf-8").splitlines() if log.exists() else []

    def sender_status(self) -> dict:
        path = self.state / "langfuse_sender.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def last_error(self) -> dict | None:
        return self.sender_status().get("last_error")

    def wait_failure(self, kind: str) -> dict:
        """The sender's round ended with this kind of failure (and the sender is gone)."""
        error = wait_for(lambda: (self.last_error() or {}).get("kind") == kind and self.last_error(), f"a {kind} failure")
        self.wait_sender_idle()
        return error  # type: ignore[return-value]

    def wait_delivered(self, expected: dict[str, dict]) -> None:
        wait_for(
            lambda: set(expected) <= set(self.standin.traces()) and not self.queue_lines() and not self.sender_pids(),
            f"{len(expected)} trace(s) delivered and an empty queue",
        )

    def assert_files_intact(self) -> None:
        """State, queue, dead letters and sender status parse; no half line anywhere."""
        state = json.loads((self.state / "langfuse_state.json").read_text())
        assert isinstance(state["transcripts"], dict)
        for path in (self.queue_path, self.dead_path):
            if path.exists():
                data = path.read_bytes()
                assert not data or data.endswith(b"\n"), f"{path.name} ends in a half line"
                for line in data.splitlines():
                    record = json.loads(line)
                    assert isinstance(record, dict), path.name
                    if path == self.queue_path:
                        assert record["key"] and record["trace"]["id"] and record["observations"]
        self.sender_status()


class Holds:
    """Counts trace POSTs the stand-in is holding open in hang mode (wraps its hold point)."""

    def __init__(self, standin: LangfuseStandin):
        self.count = 0
        self.first_at = 0.0
        self._lock = threading.Lock()
        original = standin._hold

        def hold() -> None:
            with self._lock:
                self.count += 1
                self.first_at = self.first_at or time.monotonic()
            original()

        standin._hold = hold  # type: ignore[method-assign]


def session_with_turns(rig: Rig, n: int, tag: str = "") -> Transcript:
    t = rig.transcript()
    for i in range(n):
        t.simple_turn(f"{tag}question {i}", f"{tag}answer {i}", tool=("Bash", {"command": f"ls {i}"}, f"file{i}"))
    return t


def assert_all_kept(rig: Rig, expected: dict[str, dict]) -> None:
    assert rig.queued_keys() == {f"turn:{tid}" for tid in expected}


# ------------------------------------------------------------------------------ 1. auth


def test_401_keeps_the_queue_says_which_keys_and_resumes_once_the_keys_are_fixed(rig, langfuse_standin):
    t = session_with_turns(rig, 2)
    rig.hook(stop_event(t), CC_LANGFUSE_SECRET_KEY="sk-lf-wrong")
    error = rig.wait_failure("auth")
    assert 401 in langfuse_standin.statuses
    assert langfuse_standin.observations() == []
    assert_all_kept(rig, expected_turns(t))

    st = rig.status(CC_LANGFUSE_SECRET_KEY="sk-lf-wrong")
    assert st["last_error"]["kind"] == "auth" and st["last_error"]["http_status"] == 401
    assert "CC_LANGFUSE_PUBLIC_KEY" in st["last_error"]["advice"]
    assert st["queue_turns"] == 2 and st["last_success"] is None
    assert error["advice"] == st["last_error"]["advice"]
    assert any(" ERROR " in line and "CC_LANGFUSE_PUBLIC_KEY" in line for line in rig.log_lines())

    # the user fixes the keys; the next turn's Stop sends at once, despite the auth backoff
    t.simple_turn("question 2", "answer 2")
    rig.hook(stop_event(t))
    expected = expected_turns(t)
    rig.wait_delivered(expected)
    assert_delivered_exactly_once(langfuse_standin, expected)
    st = rig.status()
    assert st["last_error"] is None and st["queue_turns"] == 0 and st["sent_total"] == 3


def test_auth_failure_is_one_clear_log_line(rig, langfuse_standin):
    t = session_with_turns(rig, 2)
    rig.hook(stop_event(t), CC_LANGFUSE_SECRET_KEY="sk-lf-wrong")
    rig.wait_failure("auth")
    # one failure, one line a user can act on: not the same failure reworded at several levels
    problems = [line for line in rig.log_lines() if " ERROR " in line or " WARNING " in line]
    assert len(problems) == 1, "\n".join(problems)
    assert "CC_LANGFUSE_PUBLIC_KEY" in problems[0]


def test_401_then_200_drain_sends_everything(rig, langfuse_standin):
    t = session_with_turns(rig, 3)
    langfuse_standin.script([401])
    rig.hook(stop_event(t))
    rig.wait_failure("auth")
    assert rig.status()["queue_turns"] == 3
    rig.drain()
    expected = expected_turns(t)
    assert_delivered_exactly_once(langfuse_standin, expected)
    assert not rig.queue_lines() and rig.status()["last_error"] is None


# ------------------------------------------------------------------------------ 2. server errors


def test_500_after_a_success_keeps_the_rest_and_never_resends_what_was_accepted(rig, langfuse_standin):
    t = session_with_turns(rig, 3)
    expected = expected_turns(t)
    first = list(expected)[-1]  # the queue is sent newest first
    langfuse_standin.script([200, 500])
    rig.hook(stop_event(t))
    error = rig.wait_failure("retry")
    assert error["http_status"] == 500
    assert set(langfuse_standin.traces()) == {first}
    assert_all_kept(rig, {k: v for k, v in expected.items() if k != first})
    rig.drain()
    assert_delivered_exactly_once(langfuse_standin, expected)
    # the accepted turn was not sent a second time
    assert len(langfuse_standin.spans) == len(langfuse_standin.observations())


def test_503_backs_off_then_the_next_hook_run_retries(rig, langfuse_standin):
    t = session_with_turns(rig, 2)
    expected = expected_turns(t)
    langfuse_standin.script([503])
    rig.hook(stop_event(t))
    error = rig.wait_failure("retry")
    assert error["http_status"] == 503
    next_attempt = rig.sender_status()["next_attempt_epoch"]
    assert next_attempt > time.time()
    # within the backoff a hook run queues but does not knock on the server again
    rig.hook(stop_event(t))
    posts = len(langfuse_standin.trace_requests)
    wait_for(lambda: time.time() > next_attempt, "the backoff to pass")
    assert len(langfuse_standin.trace_requests) == posts == 1
    assert_all_kept(rig, expected)
    # after it, any hook run (here a Stop with nothing new) starts the sender again
    rig.hook(stop_event(t))
    rig.wait_delivered(expected)
    assert_delivered_exactly_once(langfuse_standin, expected)
    assert rig.status()["last_error"] is None


# ------------------------------------------------------------------------------ 3. hang


def test_hanging_server_times_out_keeps_the_queue_then_delivers(rig, langfuse_standin):
    holds = Holds(langfuse_standin)
    langfuse_standin.hang()
    t = session_with_turns(rig, 2)
    expected = expected_turns(t)
    rig.hook(stop_event(t))
    wait_for(lambda: holds.count, "the sender's request to reach the hanging server")
    error = rig.wait_failure("retry")
    waited = time.monotonic() - holds.first_at
    assert "no answer" in error["detail"] and "2 s" in error["detail"], error
    assert waited >= 1.5, f"gave up after {waited:.1f} s, before the 2 s timeout"
    assert_all_kept(rig, expected)
    assert holds.count == 1  # one record tried, the round stopped there
    # the server wakes up (and processes the abandoned request late: Langfuse upserts it)
    langfuse_standin.release()
    rig.drain()
    assert_delivered_exactly_once(langfuse_standin, expected)
    assert_resends_identical(langfuse_standin)


# ------------------------------------------------------------------------------ 4. refused


def test_stopped_server_queue_turns_then_restart_and_drain_delivers_all(rig, langfuse_standin):
    port = langfuse_standin.port
    langfuse_standin.stop()
    t = session_with_turns(rig, 2)
    rig.hook(stop_event(t))
    error = rig.wait_failure("retry")
    assert str(port) in error["detail"]
    t.simple_turn("question late", "answer late")
    rig.hook(stop_event(t))  # backoff: no sender, but the turn is queued
    expected = expected_turns(t)
    assert_all_kept(rig, expected)
    st = rig.status()
    assert st["queue_turns"] == 3 and st["last_error"]["kind"] == "retry"
    assert "docker compose ps" in st["last_error"]["advice"]

    langfuse_standin.start()
    assert langfuse_standin.port == port
    rig.drain()
    assert_delivered_exactly_once(langfuse_standin, expected)
    assert rig.status()["last_error"] is None


# ------------------------------------------------------------------------------ 5. 400 / 413


@pytest.mark.parametrize("refusal", [400, 413])
def test_refused_record_goes_to_dead_letters_rest_goes_through_retry_dead_sends_it(rig, langfuse_standin, refusal):
    t = rig.transcript()
    big_output = "".join(f"build step {i}: compiled module_{i}.o\n" for i in range(2500))  # ~90 KB
    t.simple_turn("question 0", "answer 0", tool=("Bash", {"command": "make"}, big_output if refusal == 413 else "ok"))
    for i in (1, 2):
        t.simple_turn(f"question {i}", f"answer {i}", tool=("Bash", {"command": "ls"}, "ok"))
    expected = expected_turns(t)
    # 400: the first request, which is the newest turn (newest first); 413: the turn with the big output
    first = list(expected)[-1] if refusal == 400 else next(iter(expected))
    if refusal == 400:
        langfuse_standin.script([400])
    else:
        langfuse_standin.max_body_bytes = 40_000  # the turn with the big tool output cannot pass
    rig.hook(stop_event(t))
    wait_for(
        lambda: rig.dead_path.exists() and not rig.queue_lines() and not rig.sender_pids(), "one dead letter and the rest of the queue sent"
    )
    (dead,) = [json.loads(line) for line in rig.dead_path.read_bytes().splitlines()]
    assert dead["http_status"] == refusal and str(refusal) in dead["reason"]
    assert dead["record"]["trace"]["id"] == first
    others = {k: v for k, v in expected.items() if k != first}
    assert others and set(others) <= set(langfuse_standin.traces())
    st = rig.status()
    assert st["dead_letters"] == 1 and st["queue_turns"] == 0
    assert any("dead letter" in w and "--retry-dead" in w for w in st["warnings"])
    assert any(" ERROR " in line and str(refusal) in line for line in rig.log_lines())

    langfuse_standin.max_body_bytes = None
    proc = rig.drain("--retry-dead")
    assert "moved 1 dead letter(s) back" in proc.stderr
    assert_delivered_exactly_once(langfuse_standin, expected)
    assert rig.status()["dead_letters"] == 0


# ------------------------------------------------------------------------------ 6. kill -9


def _sender_pid(rig: Rig) -> int:
    pid = wait_for(lambda: rig.sender_status().get("pid"), "the sender to write its pid")
    assert pid in rig.sender_pids(), "langfuse_sender.json names a process that is not our sender"
    return pid  # type: ignore[return-value]


def test_kill_9_mid_request_corrupts_nothing_and_the_next_drain_delivers(rig, langfuse_standin):
    holds = Holds(langfuse_standin)
    langfuse_standin.hang()
    t = session_with_turns(rig, 3)
    expected = expected_turns(t)
    rig.hook(stop_event(t), CC_LANGFUSE_TIMEOUT="30")
    wait_for(lambda: holds.count, "the sender to be mid-request")
    pid = _sender_pid(rig)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not rig.sender_pids(), "the killed sender to be gone")
    rig.assert_files_intact()
    assert_all_kept(rig, expected)
    assert rig.status()["sender_running"] is False  # the kernel dropped its lock
    langfuse_standin.release()
    rig.drain()
    assert_delivered_exactly_once(langfuse_standin, expected)
    assert_resends_identical(langfuse_standin)


def test_kill_9_after_the_server_accepted_resends_the_same_observations(rig, langfuse_standin):
    recorded, proceed = threading.Event(), threading.Event()
    ingest = langfuse_standin._ingest

    def accept_then_stall(headers, body):
        result = ingest(headers, body)
        if not recorded.is_set():
            recorded.set()
            proceed.wait(WAIT_S)  # stored, but the 200 is not out yet
        return result

    langfuse_standin._ingest = accept_then_stall  # type: ignore[method-assign]
    t = session_with_turns(rig, 3)
    expected = expected_turns(t)
    first = list(expected)[-1]  # the queue is sent newest first
    rig.hook(stop_event(t), CC_LANGFUSE_TIMEOUT="30")
    wait_for(recorded.is_set, "the server to store the first record")
    pid = _sender_pid(rig)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not rig.sender_pids(), "the killed sender to be gone")
    proceed.set()
    rig.assert_files_intact()
    assert set(langfuse_standin.traces()) == {first}
    assert_all_kept(rig, expected)  # the sender never learnt that the first one arrived

    rig.drain()
    assert_delivered_exactly_once(langfuse_standin, expected)
    resent = [s for s in langfuse_standin.spans if s["trace_id"] == first]
    assert len(resent) == 2 * len(expected[first]["ids"])  # sent twice ...
    assert_resends_identical(langfuse_standin)  # ... identically, so Langfuse shows it once


# ------------------------------------------------------------------------------ 7. concurrency


def agent_turn(t: Transcript) -> Transcript:
    """A 2.1.x foreground Agent call with its subagent transcript; returns the subagent."""
    t.prompt("research the rate limits")
    call = tool_use("Agent", {"description": "Research API", "prompt": "Find the rate limits.", "subagent_type": "general-purpose"})
    t.respond(text("Delegating."), call)
    agent = t.subagent("a3f9c2d1e4b5a6978", call["id"], description="Research API")
    agent.agent_prompt("Find the rate limits.")
    fetch = tool_use("WebFetch", {"url": "https://example.com/limits"})
    agent.respond(text("Fetching."), fetch)
    agent.tool_results((fetch["id"], "100 requests per minute"))
    agent.respond(text("The limit is 100 requests per minute."))
    t.tool_results(
        (call["id"], [text("The limit is 100 requests per minute.\n\nagentId: a3f9c2d1e4b5a6978")]),
        tool_use_result={
            "status": "completed",
            "agentId": "a3f9c2d1e4b5a6978",
            "content": [text("The limit is 100 requests per minute.")],
            "totalDurationMs": 2000,
            "totalTokens": 500,
            "totalToolUseCount": 1,
        },
    )
    t.respond(text("The API allows 100 requests per minute."))
    t.stop_hook_summary()
    t.turn_duration()
    t.end_noise()
    return agent


def test_eight_sessions_at_once_plus_stop_and_subagent_stop_deliver_every_turn_once(rig, langfuse_standin):
    sessions = [session_with_turns(rig, 3 if i else 2, tag=f"s{i} ") for i in range(8)]
    agent = agent_turn(sessions[0])
    meta = json.loads(pathlib.Path(agent.path.replace(".jsonl", ".meta.json")).read_text())
    events = [stop_event(t) for t in sessions] + [subagent_stop_event(sessions[0], agent)]
    procs = [
        subprocess.Popen([sys.executable, "-I", HOOK], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=rig.env)
        for _ in events
    ]
    # all interpreters are up before any event arrives, so the runs overlap
    outs = [p.communicate(json.dumps(e).encode(), timeout=WAIT_S) for p, e in zip(procs, events, strict=True)]
    assert [p.returncode for p in procs] == [0] * len(events), [o[1][-500:] for o in outs]
    assert all(out == b"" for out, _ in outs)
    rig.wait_read()

    rig.assert_files_intact()
    state = json.loads((rig.state / "langfuse_state.json").read_text())
    assert {e["session_id"] for e in state["transcripts"].values()} == {t.session_id for t in sessions}

    expected: dict[str, dict] = {}
    for i, t in enumerate(sessions):
        expected.update(expected_turns(t, {meta["toolUseId"]: agent} if i == 0 else None))
    assert len(expected) == 8 * 3
    rig.wait_delivered(expected)
    assert_delivered_exactly_once(langfuse_standin, expected)
    st = rig.status()
    assert st["sessions_tracked"] == 8 and st["queue_turns"] == 0 and st["dead_letters"] == 0
    # the subagent's work sits inside its parent turn's one trace
    agent_obs = [o for o in langfuse_standin.observations() if o.type == "agent"]
    assert len(agent_obs) == 1 and agent_obs[0].trace_id in expected_turns(sessions[0], {meta["toolUseId"]: agent})


# ------------------------------------------------------------------------------ 8. corrupt queue line


def test_corrupt_queue_line_goes_to_dead_letters_and_the_rest_is_delivered(rig, langfuse_standin):
    port = langfuse_standin.port
    langfuse_standin.stop()
    t = session_with_turns(rig, 3)
    expected = expected_turns(t)
    rig.hook(stop_event(t))
    rig.wait_failure("retry")
    lines = rig.queue_lines()
    assert len(lines) == 3
    garbage = b'{"v":1,"key":"turn:0123","trace":{"id":"01' + b"\x00\xff half a record"
    rig.queue_path.write_bytes(lines[0] + b"\n" + garbage + b"\n" + b"\n".join(lines[1:]) + b"\n")
    st = rig.status()
    assert st["queue_corrupt_lines"] == 1 and st["queue_turns"] == 3

    langfuse_standin.start()
    assert langfuse_standin.port == port
    proc = rig.drain()
    assert "1 corrupt line(s) set aside" in proc.stdout
    assert_delivered_exactly_once(langfuse_standin, expected)
    (dead,) = [json.loads(line) for line in rig.dead_path.read_bytes().splitlines()]
    assert "corrupt queue line" in dead["reason"]
    assert dead["raw"].encode("utf-8", "replace").startswith(garbage[:30])
    st = rig.status()
    assert st["dead_letters"] == 1 and st["queue_corrupt_lines"] == 0 and st["queue_turns"] == 0
    assert any("dead letter" in w for w in st["warnings"])


# ------------------------------------------------------------------------------ 9. bounded queue


def test_big_queue_warns_and_drops_nothing(rig, langfuse_standin):
    langfuse_standin.stop()
    t = session_with_turns(rig, 5)
    rig.hook(stop_event(t), CC_LANGFUSE_QUEUE_WARN_MB="0.01")
    rig.wait_failure("retry")
    for i in range(5, 8):
        t.simple_turn(f"question {i}", f"answer {i}")
    rig.hook(stop_event(t), CC_LANGFUSE_QUEUE_WARN_MB="0.01")
    expected = expected_turns(t)
    assert_all_kept(rig, expected)
    st = rig.status(CC_LANGFUSE_QUEUE_WARN_MB="0.01")
    assert st["queue_bytes"] > 0.01 * 1048576 and st["queue_turns"] == 8
    (warning,) = [w for w in st["warnings"] if "queue is" in w]
    assert "nothing is dropped" in warning
    text_status = rig.cli("status", CC_LANGFUSE_QUEUE_WARN_MB="0.01").stdout
    assert "WARNING: the queue is" in text_status
    # without the small threshold the same queue raises no warning
    assert not [w for w in rig.status()["warnings"] if "queue is" in w]

    langfuse_standin.start()
    rig.drain()
    assert_delivered_exactly_once(langfuse_standin, expected)


# ------------------------------------------------------------------------------ 10. critical path


def test_hook_returns_while_the_server_holds_the_senders_request_open(rig, langfuse_standin):
    holds = Holds(langfuse_standin)
    langfuse_standin.hang()
    t = session_with_turns(rig, 1)
    rig.hook(stop_event(t), CC_LANGFUSE_TIMEOUT="60")
    wait_for(lambda: holds.count, "the sender to be stuck in a request")
    # Claude Code fires the next Stop while Langfuse hangs: the hook must not wait for it
    t.simple_turn("question 1", "answer 1")
    proc = rig.hook(stop_event(t), CC_LANGFUSE_TIMEOUT="60")
    assert proc.stdout == b"" and proc.stderr == b""
    assert langfuse_standin.hanging and langfuse_standin.trace_requests == [], "the hanging request was answered early"
    assert holds.count == 1 and rig.sender_pids()  # still the first request, still open
    expected = expected_turns(t)
    assert_all_kept(rig, expected)

    langfuse_standin.release()
    rig.wait_delivered(expected)  # the running sender picks up the second turn too
    assert_delivered_exactly_once(langfuse_standin, expected)


# ------------------------------------------------------------------------------ real transcript

from samples import SAMPLES  # noqa: E402

BIG_SAMPLE = "dkimuson-claude-code-viewer__fe5e1c67-53e7-4862-81ae-d0e013e3270b.jsonl"


@pytest.mark.skipif(not (SAMPLES / BIG_SAMPLE).exists(), reason="real transcript samples are not available here")
def test_real_session_survives_an_outage_and_arrives_once(rig, langfuse_standin):
    """A real 1.0.98 session (inline subagents, 170 API responses) queued during an outage, then drained."""
    session_id = BIG_SAMPLE.split("__", 1)[1][: -len(".jsonl")]
    path = rig.projects / f"{session_id}.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes((SAMPLES / BIG_SAMPLE).read_bytes())
    langfuse_standin.stop()
    rig.hook({"session_id": session_id, "transcript_path": str(path), "cwd": "/path/to/Demo", "hook_event_name": "Stop"})
    rig.wait_failure("retry")
    # what the transcript should produce is what the hook queued while Langfuse was away
    latest: dict[str, dict] = {}
    for line in rig.queue_lines():
        record = json.loads(line)
        latest[record["key"]] = record
    assert len(latest) >= 2
    expected = {
        r["trace"]["id"]: {"root": r["observations"][0]["id"], "ids": {o["id"] for o in r["observations"]}} for r in latest.values()
    }
    for tid in expected:
        assert tid in {_trace_id(session_id, k) for k in _turn_keys(path)}

    langfuse_standin.start()
    rig.drain()
    assert_delivered_exactly_once(langfuse_standin, expected)
    for tid, want in expected.items():
        assert {o.id for o in langfuse_standin.traces()[tid]} == want["ids"]


def _turn_keys(path: pathlib.Path) -> set[str]:
    """promptId, else the uuid of every user line: a turn's key is one of these (docs/design.md, Ids)."""
    keys = set()
    for line in path.read_bytes().splitlines():
        row = json.loads(line)
        if row.get("type") == "user":
            keys.update(k for k in (row.get("promptId"), row.get("uuid")) if k)
    return keys
