"""Odd or unreadable files in the state folder never crash `status` or `drain` (issue 9, item 7).

A queue left by a `sudo` run (owned by root, so unreadable for the user), a sender status file
holding a JSON list, a state file or an inbox file full of garbage: each gives a clear message
and a way out, never a traceback. The tests run as root, and root reads through any mode, so an
"unreadable" file is made real by running the command as an unprivileged user (uid 65534).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest
from transcript_factory import Transcript, stop_event

HOOK = str(pathlib.Path(__file__).resolve().parent.parent / "hooks" / "langfuse_hook.py")
NOBODY = 65534


def user_python() -> str | None:
    """A python3 >= 3.11 that uid 65534 can run (the dev venv's lives under /root)."""
    for candidate in dict.fromkeys(
        [os.path.realpath(sys.executable), shutil.which("python3"), "/usr/bin/python3", "/usr/local/bin/python3"]
    ):
        if not candidate:
            continue
        try:
            proc = subprocess.run(
                [candidate, "-I", "-c", "import sys; assert sys.version_info >= (3, 11)"],
                capture_output=True,
                timeout=60,
                user=NOBODY,
                group=NOBODY,
                extra_groups=[],
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if proc.returncode == 0:
            return candidate
    return None


def nobody() -> dict:
    """subprocess arguments that run a command as uid 65534 with a Python it can run (root only)."""
    python = user_python()
    if python is None:
        pytest.skip("no python3 >= 3.11 that uid 65534 can run")
    return {"user": NOBODY, "group": NOBODY, "extra_groups": [], "python": python}


@pytest.fixture
def home():
    """A user's HOME outside pytest's tmp (root's, mode 0700), owned by the user who runs the commands."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="cc-langfuse-odd-"))
    base.chmod(0o755)
    home = base / "home"
    (home / ".claude" / "state" / "locks").mkdir(parents=True)
    (home / ".claude" / "state" / "inbox").mkdir()
    yield home
    shutil.rmtree(base, ignore_errors=True)


def give_to_user(home: pathlib.Path) -> None:
    """The state folder belongs to the user (uid 65534 when we are root)."""
    if os.geteuid() == 0:
        for path in [home, *home.rglob("*")]:
            os.chown(path, NOBODY, NOBODY, follow_symlinks=False)


def state(home: pathlib.Path) -> pathlib.Path:
    return home / ".claude" / "state"


def env_for(home: pathlib.Path, base_url: str = "http://127.0.0.1:9", **extra: str) -> dict:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "CC_LANGFUSE_PUBLIC_KEY": "pk-lf-odd",
        "CC_LANGFUSE_SECRET_KEY": "sk-lf-odd",
        "CC_LANGFUSE_BASE_URL": base_url,
        "CC_LANGFUSE_USER_ID": "tester",
        "CC_LANGFUSE_TIMEOUT": "2",
        "CC_LANGFUSE_RETRY_FOR": "0",  # the worker does not stay to retry a closed port
    }
    env.update(extra)
    return env


def run(home: pathlib.Path, *args: str, env: dict | None = None, run_as: dict | None = None) -> subprocess.CompletedProcess:
    """A subcommand as the user runs it (as uid 65534 with `run_as`, else as ourselves with the dev venv)."""
    run_as = dict(run_as or {})
    python = run_as.pop("python", sys.executable)
    return subprocess.run(
        [python, "-I", HOOK, *args],
        env=env or env_for(home),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(home),
        **run_as,
    )


def assert_no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr + proc.stdout


def a_queue_record(key: str = "turn:" + "a" * 32, queued_at: str = "2026-01-01T00:00:00.000Z") -> dict:
    return {
        "v": 1,
        "key": key,
        "kind": "turn",
        "queued_at": queued_at,
        "rev": "0" * 16,
        "trace": {"id": key[5:], "name": "q", "session_id": "s", "user_id": "u", "tags": [], "metadata": {}},
        "observations": [],
    }


# ------------------------------------------------------------------------------ a queue left by `sudo`


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a file the user cannot read")
def test_queue_owned_by_root_status_says_so_and_how_to_fix_drain_exits_1_without_traceback(home):
    queue = state(home) / "pending_traces.jsonl"
    queue.write_text(json.dumps(a_queue_record()) + "\n")
    give_to_user(home)
    os.chown(queue, 0, 0)
    queue.chmod(0o600)
    user = nobody()

    st = run(home, "status", run_as=user)
    assert_no_traceback(st)
    assert st.returncode == 0, st.stderr
    assert "Permission denied" in st.stdout and str(queue) in st.stdout and "chown" in st.stdout, st.stdout
    js = run(home, "status", "--json", run_as=user)
    assert js.returncode == 0, js.stderr
    data = json.loads(js.stdout)
    assert any("chown" in w for w in data["warnings"]), data["warnings"]

    dr = run(home, "drain", run_as=user)
    assert_no_traceback(dr)
    assert dr.returncode == 1
    assert "chown" in dr.stdout + dr.stderr and str(queue) in dr.stdout + dr.stderr, dr.stdout + dr.stderr
    assert queue.stat().st_uid == 0 and json.loads(queue.read_text())["key"]  # nothing lost

    dead = run(home, "drain", "--retry-dead", run_as=user)
    assert_no_traceback(dead)
    assert dead.returncode == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a file the user cannot read")
@pytest.mark.parametrize("name", ["langfuse_sender.json", "langfuse_state.json", "dead_traces.jsonl", "locks", "inbox"])
def test_other_files_owned_by_root_never_crash_status_or_drain(home, name):
    path = state(home) / name
    if not path.exists():
        path.write_text("{}\n" if name.endswith("json") else json.dumps({"record": a_queue_record()}) + "\n")
    give_to_user(home)
    (state(home) / "inbox" / "00000000000000000001-1.json").write_text(json.dumps({"v": 1, "received": 1, "event": {}, "env": {}}))
    os.chown(state(home) / "inbox" / "00000000000000000001-1.json", NOBODY, NOBODY)
    os.chown(path, 0, 0)
    path.chmod(0o700 if path.is_dir() else 0o600)
    user = nobody()
    for args in (("status",), ("status", "--json"), ("drain",), ("drain", "--retry-dead")):
        proc = run(home, *args, run_as=user)
        assert_no_traceback(proc)
        assert proc.returncode in (0, 1), (args, proc.returncode, proc.stderr)
        if args[0] == "status":
            assert proc.returncode == 0, proc.stderr
            assert str(path) in proc.stdout, (args, proc.stdout)
        elif proc.returncode == 1:
            assert str(path) in proc.stdout + proc.stderr and "chown" in proc.stdout + proc.stderr, (args, proc.stdout + proc.stderr)


# ------------------------------------------------------------------------------ odd contents


SENDER_STATUS_ODDITIES = [
    b"[1, 2, 3]",
    b'"a string"',
    b"null",
    b"\x00\xff garbage",
    json.dumps(
        {
            "last_error": "a string, not an object",
            "next_attempt_epoch": "soon",
            "last_attempt_epoch": [],
            "last_success": 12,
            "sent_total": "many",
            "consecutive_failures": "x",
            "bootstrap": "broken",
        }
    ).encode(),
    json.dumps({"last_error": {"time": 5, "advice": ["x"], "detail": None, "kind": 3}, "next_attempt_epoch": 1e308}).encode(),
    json.dumps({"next_attempt_epoch": float("nan"), "last_attempt_epoch": float("inf")}).encode(),
]


@pytest.mark.parametrize("content", SENDER_STATUS_ODDITIES, ids=range(len(SENDER_STATUS_ODDITIES)))
def test_odd_sender_status_file_never_crashes_status_or_drain_and_drain_still_delivers(home, content, langfuse_standin):
    t = Transcript(str(home / ".claude" / "projects" / "-p" / "8d3d3d3d-0000-4000-8000-000000000001.jsonl"))
    t.simple_turn("odd status", "still delivered")
    (state(home) / "langfuse_sender.json").write_bytes(content)
    env = env_for(
        home,
        base_url=langfuse_standin.base_url,
        CC_LANGFUSE_PUBLIC_KEY=langfuse_standin.public_key,
        CC_LANGFUSE_SECRET_KEY=langfuse_standin.secret_key,
    )
    for args in (("status",), ("status", "--json")):
        proc = run(home, *args, env=env)
        assert_no_traceback(proc)
        assert proc.returncode == 0, proc.stderr
    hook = subprocess.run(
        [sys.executable, "-I", HOOK], input=json.dumps(stop_event(t)), env=env, capture_output=True, text=True, timeout=60
    )
    assert (hook.returncode, hook.stdout, hook.stderr) == (0, "", "")
    from transcript_factory import wait_for_worker

    wait_for_worker(state(home))
    proc = run(home, "drain", env=env)
    assert_no_traceback(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 left in the queue" in proc.stdout
    assert langfuse_standin.traces(), "the turn never arrived"
    st = json.loads(run(home, "status", "--json", env=env).stdout)
    assert st["last_error"] is None and st["queue_turns"] == 0


STATE_ODDITIES = [
    b"\x00\x01garbage",
    b"[]",
    b'{"transcripts": []}',
    b'{"transcripts": {"k": 5, "j": "x", "m": {"session_id": ["not", "hashable"]}}}',
]


@pytest.mark.parametrize("content", STATE_ODDITIES, ids=range(len(STATE_ODDITIES)))
def test_odd_state_file_never_crashes_status_or_drain_and_the_cursor_is_kept_again(home, content):
    t = Transcript(str(home / ".claude" / "projects" / "-p" / "8d3d3d3d-0000-4000-8000-000000000003.jsonl"))
    t.simple_turn("after the odd state", "fine")
    (state(home) / "langfuse_state.json").write_bytes(content)
    (state(home) / "inbox" / "00000000000000000001-1.json").write_text(
        json.dumps({"v": 1, "received": 1, "event": stop_event(t), "env": {}})
    )
    for args in (("status",), ("status", "--json"), ("drain",)):
        proc = run(home, *args)
        assert_no_traceback(proc)
        assert proc.returncode in (0, 1), (args, proc.stderr)
    queue = state(home) / "pending_traces.jsonl"
    assert [json.loads(line)["trace"]["name"] for line in queue.read_text().splitlines()] == ["after the odd state"]
    cursors = json.loads((state(home) / "langfuse_state.json").read_text())["transcripts"]
    assert [c for c in cursors.values() if isinstance(c, dict) and c.get("session_id") == t.session_id], cursors


# (content, events read: an event about a transcript that does not exist is read, and holds nothing)
INBOX_ODDITIES = [
    (b"not json at all", 1),
    (b"[]", 1),
    (b'{"v": 1, "received": "yesterday", "event": {"session_id": "s", "transcript_path": "/nonexistent/t.jsonl"}, "env": {}}', 2),
    (
        b'{"v": 1, "received": 1e999, "event": {"session_id": "s", "transcript_path": "/nonexistent/t.jsonl"}, "env": {"CC_LANGFUSE_TIMEOUT": "inf"}}',
        2,
    ),
    (b'{"v": 1, "received": 1, "event": {"session_id": 5, "transcript_path": ["x"]}, "env": []}', 1),
    (b"\xff\xfe\x00\x00", 1),
]


@pytest.mark.parametrize("content,read", INBOX_ODDITIES, ids=range(len(INBOX_ODDITIES)))
def test_odd_inbox_file_never_crashes_drain_and_good_events_still_get_read(home, content, read):
    t = Transcript(str(home / ".claude" / "projects" / "-p" / "8d3d3d3d-0000-4000-8000-000000000002.jsonl"))
    t.simple_turn("after the odd file", "fine")
    inbox = state(home) / "inbox"
    (inbox / "00000000000000000001-1.json").write_bytes(content)
    (inbox / "00000000000000000002-1.json").write_text(json.dumps({"v": 1, "received": 2, "event": stop_event(t), "env": {}}))
    (inbox / "00000000000000000003-1.json").mkdir()  # not even a file
    st = run(home, "status")
    assert_no_traceback(st)
    assert st.returncode == 0
    proc = run(home, "drain")  # the server is not there: the turn stays queued
    assert_no_traceback(proc)
    assert f"read {read} waiting hook event" in proc.stderr, proc.stderr
    queue = state(home) / "pending_traces.jsonl"
    assert [json.loads(line)["trace"]["name"] for line in queue.read_text().splitlines()] == ["after the odd file"]
    assert not (inbox / "00000000000000000001-1.json").exists()
    assert proc.returncode == 1 and "stopped:" in proc.stdout  # the server refused, said as such
    again = run(home, "status")
    assert again.returncode == 0 and "Traceback" not in again.stdout
