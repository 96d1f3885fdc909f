"""The hook's critical path and the worker behind it.

The hook process (what Claude Code waits for) must do constant work: validate the event, write one
news file into the inbox, wake the worker, exit. These tests run the real entry file the way the
installer registers it (`<python> -I <path>/langfuse_hook.py`) and look at what it imported and
touched. The worker's waits for Claude Code (a Stop before its final answer is flushed, a Stop
before a new session's transcript exists) are driven through `process_inbox` with news files whose
arrival time is set, so no test sleeps through a real wait.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import subprocess
import sys
import time

import pytest
from claude_code_langfuse.config import ensure_state_dir
from claude_code_langfuse.files import Paths
from claude_code_langfuse.inbox import list_news, read_news, write_news
from claude_code_langfuse.worker import LAG_WAIT_S, MISSING_WAIT_S, process_inbox
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transcript_factory import Transcript, capturing_logger, root, stop_event, text, wait_for_worker
from transcript_factory import hook_process_env as hook_env

HOOK = str(pathlib.Path(__file__).resolve().parent.parent / "hooks" / "langfuse_hook.py")

# What the critical path must never load: the SDK, OpenTelemetry, any HTTP client, process
# machinery, and every module that reads transcripts or sends (those are the worker's).
FORBIDDEN = (
    "langfuse",
    "opentelemetry",
    "httpx",
    "http.client",
    "urllib.request",
    "ssl",
    "socket",
    "subprocess",
    "logging",
    "dataclasses",
    "claude_code_langfuse.transcript",
    "claude_code_langfuse.turns",
    "claude_code_langfuse.subagents",
    "claude_code_langfuse.records",
    "claude_code_langfuse.redaction",
    "claude_code_langfuse.store",
    "claude_code_langfuse.collect",
    "claude_code_langfuse.sender",
    "claude_code_langfuse.delivery",
    "claude_code_langfuse.worker",
    "claude_code_langfuse.commands",
    "claude_code_langfuse.backfill",
    "claude_code_langfuse.doctor",
    "claude_code_langfuse.insights",
)


@pytest.fixture
def session(tmp_path):
    return Transcript(str(tmp_path / "home" / ".claude" / "projects" / "-home-dev-proj" / "5b469540-beb0-4db7-b5e1-5bf71f36cd69.jsonl"))


def _importtime(argv: list[str], stdin: bytes = b"", env: dict | None = None) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run a Python with -X importtime: every module the process imported."""
    proc = subprocess.run([sys.executable, "-I", "-X", "importtime", *argv], input=stdin, env=env, capture_output=True, timeout=60)
    modules = set()
    for line in proc.stderr.decode().splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                modules.add(name)
    return proc, modules


def imported_by_hook(stdin: bytes, env: dict) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run the entry as registered (`<python> -I <path>`): every module the hook process imported."""
    return _importtime([HOOK], stdin, env)


# What the hook process may import beyond what `python -I -c pass` imports anyway: start-up is
# most of a hook's cost (docs/benchmarks.md), and `json` alone (with the `re`, `enum`, `functools`
# and `collections` it pulls in) cost a do-nothing hook's worth of time on every event.
HOOK_EXTRA_MODULES = {"errno", "fcntl", "_sha256", "_sha2", "pwd"}


FACT_FIELDS = {  # issue 11: the fact events, each with the field its handler requires
    "PermissionRequest": {"tool_name": "Write", "tool_input": {"file_path": "/p/f.txt", "content": "x"}},
    "PostToolUse": {"tool_name": "Bash", "tool_use_id": "toolu_01", "tool_response": {"stdout": "ok"}, "duration_ms": 37},
    "PostToolUseFailure": {"tool_name": "Bash", "tool_use_id": "toolu_02", "error": "Exit code 3", "duration_ms": 29},
    "SubagentStart": {"agent_id": "a10c", "agent_type": "general-purpose"},
    "SessionStart": {"source": "startup"},
    "StopFailure": {"error": "server_error", "last_assistant_message": "API Error: 529"},
}


@pytest.mark.parametrize("event_name", ["Stop", "SubagentStop", "SessionEnd", *FACT_FIELDS])
def test_critical_path_imports_no_sdk_no_http_no_reader_and_nothing_a_bare_python_does_not(tmp_path, session, event_name):
    session.simple_turn("one", "answer one")
    event = stop_event(session, "answer one", name=event_name)
    event.update(FACT_FIELDS.get(event_name, {}))
    proc, modules = imported_by_hook(json.dumps(event).encode(), hook_env(tmp_path))
    assert proc.returncode == 0 and proc.stdout == b""
    assert "claude_code_langfuse.hook" in modules, "the importtime listing did not work"
    heavy = sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))
    assert heavy == [], f"the {event_name} hook process imported {heavy}"
    bare = _importtime(["-c", "pass"])[1]
    extra = sorted(m for m in modules - bare - HOOK_EXTRA_MODULES if not m.startswith("claude_code_langfuse"))
    assert extra == [], f"the {event_name} hook process imported {extra} (json? re? collections? each costs every event)"
    # the worker it woke did the reading
    wait_for_worker(tmp_path / "state")
    queue_file = tmp_path / "state" / "pending_traces.jsonl"
    queue = queue_file.read_bytes().splitlines() if queue_file.exists() else []
    # a fact event reads no transcript (the next transcript event merges it); the others queue the turn
    expected = [] if event_name in FACT_FIELDS and event_name != "StopFailure" else ["one"]
    assert [json.loads(line)["trace"]["name"] for line in queue] == expected


def test_hook_stores_the_event_as_received_and_the_worker_drops_a_bad_one(tmp_path, session):
    """The hook does not parse the event; the worker checks it and says why it dropped it."""
    env = hook_env(tmp_path)
    for stdin in (
        b"not json",
        b'{"hook_event_name": "Stop"',
        b'{"hook_event_name": "Notification", "session_id": "s", "transcript_path": "/t"}',
    ):
        proc = subprocess.run([sys.executable, "-I", HOOK], input=stdin, env=env, capture_output=True, timeout=30)
        assert proc.returncode == 0 and proc.stdout == b"" and proc.stderr == b""
    wait_for_worker(tmp_path / "state")
    log = (tmp_path / "state" / "langfuse_hook.log").read_text()
    assert "ignored a hook call: hook stdin is not a JSON object" in log  # the hook's own check
    assert "ignored a hook call: hook stdin is not JSON" in log  # the worker's
    assert "'Notification' is not one this hook handles" in log
    assert list_news(str(tmp_path / "state" / "inbox")) == []


def test_a_changed_config_file_hands_over_to_a_new_worker(tmp_path, session):
    """Keys fixed in ~/.claude/langfuse/config.json (no variables): the hook never parses that
    file, but its fingerprint covers the file's bytes, so a running worker with the old file is
    taken over."""
    from claude_code_langfuse.config import load_settings
    from claude_code_langfuse.files import FileLock

    env = {
        k: v
        for k, v in hook_env(tmp_path).items()
        if not k.startswith("CC_LANGFUSE_") or k in ("CC_LANGFUSE_STATE_DIR", "CC_LANGFUSE_RETRY_FOR")
    }
    config = tmp_path / "home" / ".claude" / "langfuse" / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        json.dumps(
            {"CC_LANGFUSE_PUBLIC_KEY": "pk-lf-test", "CC_LANGFUSE_SECRET_KEY": "sk-lf-OLD", "CC_LANGFUSE_BASE_URL": "http://127.0.0.1:9"}
        )
    )
    old = load_settings(env).sources_fingerprint
    paths = Paths(env["CC_LANGFUSE_STATE_DIR"])
    ensure_state_dir(paths.dir)
    running = FileLock(paths.worker_lock, timeout=0)
    assert running.acquire(blocking=False)
    try:
        pathlib.Path(paths.worker_keys).write_text(old)
        session.simple_turn("one", "answer one")
        hook = [sys.executable, "-I", HOOK]
        subprocess.run(hook, input=json.dumps(stop_event(session, "answer one")).encode(), env=env, timeout=30)
        time.sleep(0.5)
        assert not os.path.exists(paths.takeover), "same file: the running worker keeps it"
        config.write_text(config.read_text().replace("sk-lf-OLD", "sk-lf-test"))
        subprocess.run(hook, input=json.dumps(stop_event(session, "answer one")).encode(), env=env, timeout=30)
        deadline = time.monotonic() + 20
        while not os.path.exists(paths.takeover):
            assert time.monotonic() < deadline, "no worker came to take over after the config file changed"
            time.sleep(0.05)
    finally:
        running.release()
    wait_for_worker(pathlib.Path(paths.dir))
    assert pathlib.Path(paths.worker_keys).read_text() == load_settings(env).sources_fingerprint != old


def test_hook_never_opens_the_transcript(tmp_path, session):
    """Constant work: the transcript may be any size; the hook does not even open it. A FIFO as
    transcript_path would block any reader forever: the hook still returns at once."""
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    event = {"hook_event_name": "Stop", "session_id": "s-fifo", "transcript_path": str(fifo), "last_assistant_message": "x"}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-I", HOOK], input=json.dumps(event).encode(), env=hook_env(tmp_path), capture_output=True, timeout=30
    )
    assert proc.returncode == 0 and proc.stdout == b"" and proc.stderr == b""
    assert time.monotonic() - started < 30
    wait_for_worker(tmp_path / "state", timeout=MISSING_WAIT_S + 10)
    assert "is not a file" in (tmp_path / "state" / "langfuse_hook.log").read_text()


def test_news_file_holds_the_event_and_only_tracing_settings(tmp_path, session):
    env = hook_env(tmp_path, CC_LANGFUSE_TAGS_UNRELATED="x", AWS_SECRET_ACCESS_KEY="not-ours", TRACE_TO_LANGFUSE="true")
    inbox = tmp_path / "inbox"
    path = write_news(str(inbox), json.dumps(stop_event(session, "hi")).encode(), env)
    news = read_news(path)
    assert news["event"]["last_assistant_message"] == "hi"
    assert "AWS_SECRET_ACCESS_KEY" not in news["env"] and "PATH" not in news["env"] and "HOME" not in news["env"]
    assert news["env"]["TRACE_TO_LANGFUSE"] == "true" and news["env"]["CC_LANGFUSE_PUBLIC_KEY"] == "pk-lf-test"
    # secrets never go to disk: a worker sends with the keys of the process that started it
    assert "CC_LANGFUSE_SECRET_KEY" not in news["env"] and b"sk-lf-test" not in pathlib.Path(path).read_bytes()
    assert (os.stat(path).st_mode & 0o777) == 0o600 and (os.stat(inbox).st_mode & 0o777) == 0o700


_env_text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=30)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    env=st.dictionaries(
        st.sampled_from(["CC_LANGFUSE_TAGS", "LANGFUSE_HOST", "CLAUDE_PLUGIN_OPTION_X", "TRACE_TO_LANGFUSE", "CI", "GITHUB_SHA", "HOME"]),
        _env_text,
    ),
    event=st.binary(max_size=200),
    cut=st.integers(min_value=0, max_value=400),
)
def test_news_files_round_trip_and_a_damaged_one_never_raises(tmp_path, env, event, cut):
    """Whatever the settings' values (=, newlines, any text but NUL) and whatever the hook got on
    stdin, the worker reads back exactly what was written; a file cut anywhere is None or an error
    for the worker to log, never an exception."""
    from claude_code_langfuse.inbox import ci_env, settings_env

    path = write_news(str(tmp_path / "inbox"), event, env)
    news = read_news(path)
    assert news["env"] == settings_env(env) and news["ci"] == ci_env(env)
    assert bool(news["event"]) != bool(news.get("error"))
    data = pathlib.Path(path).read_bytes()
    pathlib.Path(path).write_bytes(data[:cut])
    damaged = read_news(path)
    assert damaged is None or isinstance(damaged["event"], dict)
    os.unlink(path)


def test_lone_surrogate_in_an_event_is_recorded(tmp_path, session):
    path = write_news(str(tmp_path / "inbox"), json.dumps(stop_event(session, "broken emoji \ud83d")).encode(), {})
    assert read_news(path)["event"]["last_assistant_message"] == "broken emoji \ud83d"


def test_a_hook_with_other_keys_takes_over_from_the_running_worker(tmp_path, session):
    """The user fixed the secret key while a worker runs: the secret is not in the inbox, so the
    hook starts a new worker from its own environment, which waits for the running one's lock."""
    from claude_code_langfuse.config import load_settings
    from claude_code_langfuse.files import FileLock

    state = tmp_path / "state"
    paths = Paths(str(state))
    ensure_state_dir(paths.dir)
    running = FileLock(paths.worker_lock, timeout=0)
    assert running.acquire(blocking=False)  # a worker started with the old keys
    try:
        old_keys = hook_env(tmp_path, CC_LANGFUSE_SECRET_KEY="sk-lf-OLD")
        pathlib.Path(paths.worker_keys).write_text(load_settings(old_keys).sources_fingerprint)
        session.simple_turn("one", "answer one")
        proc = subprocess.run(
            [sys.executable, "-I", HOOK], input=json.dumps(stop_event(session, "answer one")).encode(), env=hook_env(tmp_path), timeout=30
        )
        assert proc.returncode == 0
        deadline = time.monotonic() + 20
        while not os.path.exists(paths.takeover):  # the new worker asks for the lock
            assert time.monotonic() < deadline, "no worker came to take over"
            time.sleep(0.05)
    finally:
        running.release()
    wait_for_worker(state)
    assert pathlib.Path(paths.worker_keys).read_text() == load_settings(hook_env(tmp_path)).sources_fingerprint
    assert [json.loads(line)["trace"]["name"] for line in pathlib.Path(paths.queue).read_bytes().splitlines()] == ["one"]


def test_a_hook_with_the_same_keys_leaves_the_running_worker_alone(tmp_path, session):
    from claude_code_langfuse.config import load_settings
    from claude_code_langfuse.files import FileLock

    paths = Paths(str(tmp_path / "state"))
    ensure_state_dir(paths.dir)
    running = FileLock(paths.worker_lock, timeout=0)
    assert running.acquire(blocking=False)
    try:
        pathlib.Path(paths.worker_keys).write_text(load_settings(hook_env(tmp_path)).sources_fingerprint)
        session.simple_turn("one", "answer one")
        subprocess.run(
            [sys.executable, "-I", HOOK], input=json.dumps(stop_event(session, "answer one")).encode(), env=hook_env(tmp_path), timeout=30
        )
        time.sleep(1.0)  # a worker started by mistake would have asked for the lock by now
        assert not os.path.exists(paths.takeover)
        assert len(list_news(paths.inbox)) == 1  # left for the running worker
    finally:
        running.release()


# ============================================================================ the worker's waits


def _log():
    log = logging.getLogger("cc-langfuse-test-worker")
    log.propagate = False
    return log


def _news(paths: Paths, event: dict, age: float, env: dict) -> str:
    """A news file as the hook writes it, received `age` seconds ago."""
    ensure_state_dir(paths.dir)
    return write_news(paths.inbox, json.dumps(event).encode(), env, received_ns=time.time_ns() - int(age * 1e9))


def _queued(paths: Paths) -> list[dict]:
    if not os.path.exists(paths.queue):
        return []
    return [json.loads(line) for line in pathlib.Path(paths.queue).read_bytes().splitlines() if line.strip()]


def test_stop_before_the_answer_is_flushed_waits_for_it(tmp_path, session):
    paths = Paths(str(tmp_path / "state"))
    env = hook_env(tmp_path)
    session.prompt("what is 6x7?")
    # Stop fired: the event knows the answer, the transcript does not have it yet
    _news(paths, stop_event(session, "42."), age=0.0, env=env)
    handled, waiting, _ = process_inbox(paths, _log(), base_env=env)
    assert (handled, waiting) == (0, True) and _queued(paths) == []
    assert len(list_news(paths.inbox)) == 1, "the event must stay until its turn can be read"
    session.respond(text("42."))
    session.turn_duration()
    handled, waiting, _ = process_inbox(paths, _log(), base_env=env)
    assert (handled, waiting) == (1, False) and list_news(paths.inbox) == []
    [record] = _queued(paths)
    assert root(record)["output"] == "42."
    assert "output_source" not in root(record)["metadata"], "the answer came from disk, not from the event"


def test_stop_whose_answer_never_reaches_disk_uses_the_event_text_once_the_wait_is_over(tmp_path, session):
    paths = Paths(str(tmp_path / "state"))
    env = hook_env(tmp_path)
    session.prompt("what is 6x7?")
    _news(paths, stop_event(session, "42."), age=LAG_WAIT_S + 0.1, env=env)
    handled, waiting, _ = process_inbox(paths, _log(), base_env=env)
    assert (handled, waiting) == (1, False)
    [record] = _queued(paths)
    assert root(record)["output"] == "42." and root(record)["metadata"]["output_source"] == "last_assistant_message"


def test_stop_before_the_transcript_exists_waits_then_reads_it(tmp_path, session):
    """With the real CLI a new `-p` session's first Stop can fire before its file exists."""
    paths = Paths(str(tmp_path / "state"))
    env = hook_env(tmp_path)
    event = stop_event(session, "hello")
    os.unlink(session.path)  # (the factory creates the file empty)
    _news(paths, event, age=0.0, env=env)
    assert process_inbox(paths, _log(), base_env=env)[:2] == (0, True)
    session.simple_turn("hi", "hello")
    assert process_inbox(paths, _log(), base_env=env)[:2] == (1, False)
    assert [r["trace"]["name"] for r in _queued(paths)] == ["hi"]


def test_missing_transcript_is_given_up_after_its_wait_with_a_log_line(tmp_path, session):
    paths = Paths(str(tmp_path / "state"))
    env = hook_env(tmp_path)
    log, lines = capturing_logger(f"cc-langfuse-test-missing-{id(paths)}")
    _news(paths, stop_event(session, "x") | {"transcript_path": str(tmp_path / "never.jsonl")}, age=MISSING_WAIT_S + 0.1, env=env)
    assert process_inbox(paths, log, base_env=env)[:2] == (1, False)
    assert list_news(paths.inbox) == [] and any("does not exist" in line for line in lines)


def test_later_events_of_a_waiting_transcript_wait_behind_it_others_do_not(tmp_path, session):
    paths = Paths(str(tmp_path / "state"))
    env = hook_env(tmp_path)
    other = Transcript(str(tmp_path / "home" / ".claude" / "projects" / "-p" / "00000000-0000-4000-8000-000000000001.jsonl"))
    other.simple_turn("other session", "done")
    session.prompt("slow one")
    _news(paths, stop_event(session, "not flushed"), age=0.0, env=env)
    _news(paths, stop_event(session, "not flushed", name="SessionEnd"), age=LAG_WAIT_S + 1, env=env)  # older wait, but behind
    _news(paths, stop_event(other, "done"), age=0.0, env=env)
    handled, waiting, _ = process_inbox(paths, _log(), base_env=env)
    assert (handled, waiting) == (1, True)
    assert [r["trace"]["name"] for r in _queued(paths)] == ["other session"]
    assert len(list_news(paths.inbox)) == 2


def test_each_event_is_read_with_the_settings_of_the_process_that_fired_it(tmp_path, session):
    """A project's settings.local.json env (TRACE_TO_LANGFUSE=false) reaches only its own hook process."""
    paths = Paths(str(tmp_path / "state"))
    worker_env = hook_env(tmp_path)  # the worker was started by another project's event: tracing on
    session.simple_turn("secret project prompt", "ok")
    _news(paths, stop_event(session, "ok"), age=LAG_WAIT_S, env=hook_env(tmp_path, TRACE_TO_LANGFUSE="false"))
    assert process_inbox(paths, _log(), base_env=worker_env)[:2] == (1, False)
    assert _queued(paths) == []


# ============================================================================ the package's shape

# docs/design.md, "Module map": the order data flows; a module imports only modules above it.
MODULE_ORDER = [
    "config", "files", "inbox", "runtime", "hook", "event", "transcript", "turns", "forks", "subagents", "records", "redaction",
    "store", "facts", "mute", "collect", "plan", "sender", "delivery", "worker", "commands", "backfill", "models", "doctor", "signals", "insights", "cli",
]  # fmt: skip


def test_imports_run_one_way_down_the_module_map():
    import ast

    pkg = pathlib.Path(HOOK).parent / "claude_code_langfuse"
    assert sorted(MODULE_ORDER) == sorted(p.stem for p in pkg.glob("*.py") if p.stem != "__init__"), "docs/design.md lists every module"
    wrong = []
    for name in MODULE_ORDER:
        for node in ast.walk(ast.parse((pkg / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                # `from .x import y`, or `from . import x, z` (then the names are the modules)
                for target in [node.module] if node.module else [a.name for a in node.names]:
                    if target in ("hook", "cli") or MODULE_ORDER.index(target) >= MODULE_ORDER.index(name):
                        wrong.append(f"{name} imports {target}")
    assert wrong == []


def test_a_worker_that_fails_unexpectedly_says_so_and_releases_its_lock(tmp_path, monkeypatch):
    from claude_code_langfuse import config, worker
    from claude_code_langfuse.files import FileLock

    log, lines = capturing_logger("cc-langfuse-test-worker-crash")
    monkeypatch.setattr(config, "_LOGGER", log)
    monkeypatch.chdir(tmp_path)

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(worker, "run_worker", broken)
    settings = config.Settings(state_dir=str(tmp_path / "state"))
    assert worker.worker_main(settings) == 1
    assert any("the worker stopped on an unexpected error" in line and "the next hook event starts a new worker" in line for line in lines)
    lock = FileLock(Paths(settings.state_dir).worker_lock, timeout=0)
    assert lock.acquire(blocking=False), "the lock must be free for the next worker"
    lock.release()


def test_a_worker_backing_off_with_a_big_queue_exits_when_idle_and_never_parses_it_whole(tmp_path, monkeypatch):
    """Found by the benchmark: behind a dead server with a large backlog, the delivery thread read
    the whole queue several times a second, which also kept the worker from ever going idle."""
    import threading

    from claude_code_langfuse import store, worker
    from claude_code_langfuse.config import Settings

    settings = Settings(state_dir=str(tmp_path / "state"), public_key="pk", secret_key="sk", base_url="http://127.0.0.1:9")
    paths = Paths(settings.state_dir)
    ensure_state_dir(paths.dir)
    record = {
        "v": 1,
        "key": "turn:x",
        "kind": "turn",
        "queued_at": "2026-01-01T00:00:00.000Z",
        "rev": "r",
        "trace": {"id": "a" * 32},
        "observations": [],
    }
    with open(paths.queue, "w") as f:
        for i in range(2000):
            f.write(json.dumps(dict(record, key=f"turn:{i}")) + "\n")
    pathlib.Path(paths.sender_status).write_text(
        json.dumps({"next_attempt_epoch": time.time() + 3600, "last_attempt_epoch": time.time(), "consecutive_failures": 9})
    )
    whole_reads = []
    real = store.queue_read
    monkeypatch.setattr(worker, "queue_read", lambda *a, **k: whole_reads.append(1) or real(*a, **k), raising=False)
    monkeypatch.setattr(store, "queue_read", lambda *a, **k: whole_reads.append(1) or real(*a, **k))
    done = threading.Event()
    t = threading.Thread(target=lambda: (worker.run_worker(settings, paths, logging.getLogger("cc-test-idle"), linger=0.5), done.set()))
    t.daemon = True
    t.start()
    assert done.wait(20), "the worker never went idle"
    assert whole_reads == [], "the queue was parsed whole while backing off"


def test_a_news_file_of_the_hook_before_the_upgrade_is_still_read(tmp_path, session):
    """An upgrade can find news files the previous hook wrote (one JSON object, the event already
    checked): the new worker reads them like its own."""
    paths = Paths(str(tmp_path / "state"))
    ensure_state_dir(paths.dir)
    os.makedirs(paths.inbox, mode=0o700)
    session.simple_turn("asked before the upgrade", "answered")
    old = {"v": 1, "received": time.time() - 60, "event": stop_event(session, "answered"), "env": {}, "ci": {}}
    pathlib.Path(paths.inbox, f"{time.time_ns():020d}-1.json").write_text(json.dumps(old))
    assert process_inbox(paths, _log(), base_env=hook_env(tmp_path))[:2] == (1, False)
    assert [r["trace"]["name"] for r in _queued(paths)] == ["asked before the upgrade"]
