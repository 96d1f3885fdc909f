"""Issue 10, point 9: mute one session without touching settings; `purge --session ID`.

Muting moves the session's cursor without queueing (as TRACE_TO_LANGFUSE=false does, for one
session); `purge` mutes, drops the session's hook events, queued records and dead letters, and
deletes its traces from Langfuse through the public API (the stand-in serves it).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import httpx
from claude_code_langfuse.config import load_settings
from claude_code_langfuse.files import Paths
from claude_code_langfuse.inbox import list_news, read_news, write_news
from claude_code_langfuse.mute import cmd_purge, is_muted, load_muted, set_muted
from claude_code_langfuse.sender import Sender, SendSettings
from claude_code_langfuse.store import json_line, queue_read
from fixtures_standin import langfuse_standin  # noqa: F401 - pytest fixture
from transcript_factory import HookRunner, Transcript, hook_process_env, stop_event, wait_for_worker

HOOK = str(pathlib.Path(__file__).resolve().parent.parent / "hooks" / "langfuse_hook.py")
A = "aaaaaaaa-1111-4111-8111-000000000001"
B = "bbbbbbbb-2222-4222-8222-000000000002"


def session(tmp_path, sid: str) -> Transcript:
    return Transcript(str(tmp_path / "projects" / "p" / f"{sid}.jsonl"), session_id=sid, cwd=str(tmp_path / "work"))


def run_cli(env: dict, *args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", HOOK, *args], env=env, capture_output=True, text=True, timeout=60, cwd=cwd)


# ============================================================================ mute


def test_a_muted_session_queues_nothing_and_unmuting_never_sends_what_was_said_meanwhile(tmp_path):
    runner = HookRunner(str(tmp_path / "state"))
    a, b = session(tmp_path, A), session(tmp_path, B)
    a.simple_turn("before the mute", "ok")
    assert [r["trace"]["name"] for r in runner.run(stop_event(a, "ok"))] == ["before the mute"]
    assert set_muted(runner.paths.dir, A, True) is True
    assert set_muted(runner.paths.dir, A, True) is False  # already muted
    a.simple_turn("ZEBRA said while muted", "quiet")
    b.simple_turn("other session", "traced")
    assert runner.run(stop_event(a, "quiet")) == []
    assert runner.entry(a)["offset"] == os.path.getsize(a.path)  # read past, not waiting
    assert [r["trace"]["name"] for r in runner.run(stop_event(b, "traced"))] == ["other session"]
    assert set_muted(runner.paths.dir, A, False) is True
    a.simple_turn("after the unmute", "back")
    assert [r["trace"]["name"] for r in runner.run(stop_event(a, "back"))] == ["after the unmute"]
    assert "ZEBRA" not in pathlib.Path(runner.paths.queue).read_text()


def test_mute_unmute_and_status_from_the_command_line(tmp_path):
    env = hook_process_env(tmp_path)
    assert run_cli(env, "mute", A).returncode == 0
    proc = run_cli(env, "mute", B)
    assert proc.returncode == 0 and f"muted session {B}" in proc.stdout
    status = json.loads(run_cli(env, "status", "--json").stdout)
    assert status["muted_sessions"] == sorted([A, B])
    assert "muted: " in run_cli(env, "status").stdout
    proc = run_cli(env, "unmute", A)
    assert proc.returncode == 0 and f"unmuted session {A}" in proc.stdout
    assert json.loads(run_cli(env, "status", "--json").stdout)["muted_sessions"] == [B]
    assert "it was not muted" in run_cli(env, "unmute", A).stdout


def test_mute_current_uses_claude_codes_session_variable_then_the_folder(tmp_path):
    env = hook_process_env(tmp_path, CLAUDE_CODE_SESSION_ID=A)
    proc = run_cli(env, "mute", "--current")
    assert proc.returncode == 0 and "CLAUDE_CODE_SESSION_ID" in proc.stderr
    assert load_muted(env["CC_LANGFUSE_STATE_DIR"]).keys() == {A}
    # without the variable: the newest session traced in this folder
    env = hook_process_env(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    runner = HookRunner(env["CC_LANGFUSE_STATE_DIR"])
    b = session(tmp_path, B)
    b.simple_turn("hi", "ho")
    runner.run(stop_event(b, "ho"))
    proc = run_cli(env, "mute", "--current", cwd=str(work))
    assert proc.returncode == 0, proc.stderr
    assert is_muted(env["CC_LANGFUSE_STATE_DIR"], B)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_cli(env, "unmute", "--current", cwd=str(elsewhere))
    assert proc.returncode == 2 and "pass the session id" in proc.stderr
    assert is_muted(env["CC_LANGFUSE_STATE_DIR"], B)


def test_muted_through_the_hook_process_and_its_worker(tmp_path):
    env = hook_process_env(tmp_path)
    a = session(tmp_path, A)
    a.simple_turn("ZEBRA muted prompt", "ok")
    set_muted(env["CC_LANGFUSE_STATE_DIR"], A, True)
    proc = subprocess.run([sys.executable, "-I", HOOK], input=json.dumps(stop_event(a, "ok")), env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == ""
    wait_for_worker(env["CC_LANGFUSE_STATE_DIR"])
    queue = pathlib.Path(env["CC_LANGFUSE_STATE_DIR"]) / "pending_traces.jsonl"
    assert not queue.exists() or "ZEBRA" not in queue.read_text()


def test_backfill_skips_a_muted_session(tmp_path):
    env = hook_process_env(tmp_path)
    a, b = session(tmp_path, A), session(tmp_path, B)
    for t in (a, b):
        t.simple_turn("ZEBRA" if t is a else "plain", "ok")
    set_muted(env["CC_LANGFUSE_STATE_DIR"], A, True)
    env["CLAUDE_CONFIG_DIR"] = str(tmp_path)  # backfill reads <config dir>/projects
    proc = run_cli(env, "backfill", "--since", "3650d")
    assert proc.returncode == 0, proc.stderr
    assert "1 muted session(s) skipped" in proc.stdout
    queued = [e.record for e in queue_read(str(pathlib.Path(env["CC_LANGFUSE_STATE_DIR"]) / "pending_traces.jsonl"))]
    assert {r["trace"]["session_id"] for r in queued} == {B}


# ============================================================================ purge


def _setup_two_sessions(tmp_path, standin):
    """A and B: one turn each delivered to the stand-in, one more each only queued, a hook event
    each waiting in the inbox, and a dead letter of A."""
    state = str(tmp_path / "state")
    runner = HookRunner(state)
    a, b = session(tmp_path, A), session(tmp_path, B)
    sent_ids = {A: set(), B: set()}
    with Sender(SendSettings(standin.public_key, standin.secret_key, standin.base_url, 5.0)) as sender:
        for t in (a, b):
            for n in range(2):
                t.simple_turn(f"{t.session_id[:4]} turn {n}", "ok")
                for rec in runner.run(stop_event(t, "ok")):
                    assert sender.send(rec).outcome == "accepted"
                    sent_ids[t.session_id].add(rec["trace"]["id"])
    paths = Paths(state)
    os.unlink(paths.queue)  # delivered
    queued, records = {}, {}
    for t in (a, b):
        t.simple_turn(f"{t.session_id[:4]} queued turn", "ok")
        (rec,) = runner.run(stop_event(t, "ok"))
        queued[t.session_id], records[t.session_id] = rec["trace"]["id"], rec
        write_news(paths.inbox, json.dumps(stop_event(t, "ok")).encode(), {})
    dead = {
        "dead_at": "2026-01-01T00:00:00.000Z",
        "reason": "HTTP 400",
        "http_status": 400,
        "record": records[A],
    }
    with open(paths.dead, "ab") as f:
        f.write(json_line(dead))
        f.write(json_line({"dead_at": "x", "kind": "unreadable-turn", "session_id": B, "trace_id": "f" * 32}))
    return paths, sent_ids, queued


def _settings(tmp_path, standin, **extra):
    env = hook_process_env(
        tmp_path,
        CC_LANGFUSE_BASE_URL=standin.base_url,
        CC_LANGFUSE_PUBLIC_KEY=standin.public_key,
        CC_LANGFUSE_SECRET_KEY=standin.secret_key,
        **extra,
    )
    return load_settings(env)


def test_purge_deletes_the_sessions_traces_and_drops_what_waits_locally(tmp_path, langfuse_standin, capsys):  # noqa: F811
    langfuse_standin.page_size = 2  # the listing takes several pages: the cursor must be followed
    paths, sent_ids, queued = _setup_two_sessions(tmp_path, langfuse_standin)
    assert {o.trace_id for o in langfuse_standin.observations() if o.session_id == A} == sent_ids[A]
    assert cmd_purge(_settings(tmp_path, langfuse_standin), A) == 0
    out = capsys.readouterr().out
    assert "dropped 1 waiting hook event(s), 1 queued record(s) and 1 dead letter(s)" in out
    # Langfuse: A's traces gone (and the queued one, which it may have had already), B's kept
    assert {o.session_id for o in langfuse_standin.observations()} == {B}
    assert {o.trace_id for o in langfuse_standin.observations()} == sent_ids[B]
    assert set(langfuse_standin.deleted_traces) >= sent_ids[A] | {queued[A]}
    assert not set(langfuse_standin.deleted_traces) & (sent_ids[B] | {queued[B]})
    cursors = [r for r in langfuse_standin.requests if r.path.startswith("/api/public/v2/observations") and "cursor=" in r.path]
    assert cursors
    # locally: only B is left, and A is muted
    assert [e.record["trace"]["session_id"] for e in queue_read(paths.queue)] == [B]
    assert [read_news(os.path.join(paths.inbox, n))["event"]["session_id"] for n in list_news(paths.inbox)] == [B]
    dead = pathlib.Path(paths.dead).read_text()
    assert A not in dead and B in dead
    assert is_muted(paths.dir, A) and not is_muted(paths.dir, B)


def test_purge_from_the_command_line(tmp_path, langfuse_standin):  # noqa: F811
    paths, sent_ids, _ = _setup_two_sessions(tmp_path, langfuse_standin)
    env = hook_process_env(
        tmp_path,
        CC_LANGFUSE_BASE_URL=langfuse_standin.base_url,
        CC_LANGFUSE_PUBLIC_KEY=langfuse_standin.public_key,
        CC_LANGFUSE_SECRET_KEY=langfuse_standin.secret_key,
    )
    proc = run_cli(env, "purge", "--session", B)
    assert proc.returncode == 0, proc.stderr
    # 2 delivered + 1 queued + the unreadable turn's dead letter (a trace Langfuse never had: harmless)
    assert "to delete 4 trace(s) of session" in proc.stdout and "(2 found on the server)" in proc.stdout
    assert {o.session_id for o in langfuse_standin.observations()} == {A}
    assert json.loads(run_cli(env, "status", "--json").stdout)["muted_sessions"] == [B]
    # A's hook event came while purge held the worker lock: purge started a worker for it
    wait_for_worker(paths.dir)
    assert list_news(paths.inbox) == []
    assert {o.session_id for o in langfuse_standin.observations()} == {A}


def test_purge_with_the_server_down_does_the_local_part_and_says_to_run_it_again(tmp_path, langfuse_standin, capsys):  # noqa: F811
    paths, _, _ = _setup_two_sessions(tmp_path, langfuse_standin)
    langfuse_standin.stop()
    assert cmd_purge(_settings(tmp_path, langfuse_standin, CC_LANGFUSE_TIMEOUT="2"), A) == 1
    err = capsys.readouterr().err
    assert "cannot reach Langfuse" in err and f"purge --session {A}` again" in err
    assert [e.record["trace"]["session_id"] for e in queue_read(paths.queue)] == [B]
    assert is_muted(paths.dir, A)


def test_purge_with_wrong_keys_says_so(tmp_path, langfuse_standin, capsys):  # noqa: F811
    _setup_two_sessions(tmp_path, langfuse_standin)
    settings = _settings(tmp_path, langfuse_standin)._replace(secret_key="sk-lf-wrong")
    assert cmd_purge(settings, A) == 1
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "CC_LANGFUSE_SECRET_KEY" in err
    assert {o.session_id for o in langfuse_standin.observations()} == {A, B}


def test_standin_delete_needs_keys_and_a_list(langfuse_standin):  # noqa: F811
    url = langfuse_standin.base_url + "/api/public/traces"
    auth = (langfuse_standin.public_key, langfuse_standin.secret_key)
    assert httpx.request("DELETE", url, json={"traceIds": ["a" * 32]}).status_code == 401
    assert httpx.request("DELETE", url, json={"traceIds": []}, auth=auth).status_code == 400
    assert httpx.request("DELETE", url, json={"traceIds": ["a" * 32]}, auth=auth).status_code == 200
    assert httpx.delete(url + "/" + "b" * 32, auth=auth).status_code == 200
    assert langfuse_standin.deleted_traces == ["a" * 32, "b" * 32]
