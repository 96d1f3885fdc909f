"""Issue 10, points 5 and 8: tags, environment, release, host and CI facts per event; CC_LANGFUSE_CONTENT=off.

What the hook captures (news file), what the worker queues, and what the stand-in decodes from the
OTLP spans the sender posts (langfuse.environment, langfuse.release, trace tags and metadata).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import secrets
import socket
import subprocess
import sys

import pytest
from claude_code_langfuse.config import Settings, load_settings
from claude_code_langfuse.files import Paths
from claude_code_langfuse.inbox import list_news, read_news, write_news
from claude_code_langfuse.records import ci_metadata
from claude_code_langfuse.sender import Sender, SendSettings
from claude_code_langfuse.worker import process_inbox
from fixtures_standin import langfuse_standin  # noqa: F401 - pytest fixture
from transcript_factory import (
    HookRunner,
    Transcript,
    hook_process_env,
    observations,
    root,
    stop_event,
    subagent_stop_event,
    text,
    thinking,
    tool_use,
    wait_for_worker,
)

HOOK = str(pathlib.Path(__file__).resolve().parent.parent / "hooks" / "langfuse_hook.py")
SID = "7b1e0c52-9a0f-4a57-8d61-0c0ffee00010"

GITHUB_CI = {
    "CI": "true",
    "GITHUB_ACTIONS": "true",
    "GITHUB_REPOSITORY": "acme/shop",
    "GITHUB_WORKFLOW": "claude-review",
    "GITHUB_RUN_ID": "9876543210",
    "GITHUB_RUN_ATTEMPT": "2",
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
    "GITHUB_REF": "refs/pull/482/merge",
    "GITHUB_EVENT_NAME": "pull_request",
}
CI_SECRETS = {
    "GITHUB_TOKEN": "ghs_SECRETSECRETSECRETSECRETSECRET0001",
    "ACTIONS_RUNTIME_TOKEN": "eyJSECRET.runtime.token",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "SECRET-id-token",
    "CI_JOB_TOKEN": "glcbt-SECRET-job-token",
    "CI_REGISTRY_PASSWORD": "SECRET-registry-password",
    "NPM_TOKEN": "npm_SECRETSECRET",
}


# ============================================================================ settings


def settings(**env) -> Settings:
    return load_settings({"HOME": "/nonexistent-home", "CC_LANGFUSE_STATE_DIR": "/tmp/x", **env})


def test_tags_are_trimmed_deduplicated_and_bounded():
    s = settings(CC_LANGFUSE_TAGS=" team-a, backend ,team-a,, ,  review   bot ")
    assert s.tags == ("team-a", "backend", "review bot")
    assert s.config_error == ""
    s = settings(CC_LANGFUSE_TAGS="ok," + "x" * 101 + "," + ",".join(f"t{i}" for i in range(30)))
    assert s.tags[0] == "ok" and "x" * 101 not in s.tags and len(s.tags) == 20
    assert "longer than 100" in s.config_error and "only the first 20" in s.config_error


def test_tags_from_the_config_file_as_a_list(tmp_path):
    conf = tmp_path / "config.json"
    conf.write_text(json.dumps({"CC_LANGFUSE_TAGS": ["a", " b ", "a"], "CC_LANGFUSE_ENVIRONMENT": "staging"}))
    s = settings(CC_LANGFUSE_CONFIG=str(conf))
    assert (s.tags, s.environment, s.config_error) == (("a", "b"), "staging", "")


@pytest.mark.parametrize("name", ["production", "dev-box_2", "a" * 40])
def test_valid_environment_names(name):
    s = settings(CC_LANGFUSE_ENVIRONMENT=name)
    assert (s.environment, s.config_error) == (name, "")


@pytest.mark.parametrize("name", ["Production", "langfuse-prod", "a" * 41, "dev box", "prod!", "ünïcode"])
def test_invalid_environment_names_are_reported_and_not_used(name):
    s = settings(CC_LANGFUSE_ENVIRONMENT=name)
    assert s.environment == ""
    assert "CC_LANGFUSE_ENVIRONMENT" in s.config_error and "'default' environment" in s.config_error


def test_environment_falls_back_to_the_sdk_variable():
    assert settings(LANGFUSE_TRACING_ENVIRONMENT="qa").environment == "qa"
    assert settings(LANGFUSE_TRACING_ENVIRONMENT="qa", CC_LANGFUSE_ENVIRONMENT="ci").environment == "ci"


def test_content_and_hostname_flags():
    assert settings().content is True and settings().hostname is True
    s = settings(CC_LANGFUSE_CONTENT="off", CC_LANGFUSE_HOSTNAME="false")
    assert (s.content, s.hostname, s.config_error) == (False, False, "")
    assert "CC_LANGFUSE_CONTENT" in settings(CC_LANGFUSE_CONTENT="metadata").config_error


# ============================================================================ CI facts


def test_the_hook_records_the_named_ci_variables_and_never_a_secret(tmp_path):
    inbox = str(tmp_path / "inbox")
    path = write_news(
        inbox, json.dumps({"session_id": SID, "transcript_path": "/x.jsonl"}).encode(), {**GITHUB_CI, **CI_SECRETS, "HOME": "/h"}
    )
    raw = pathlib.Path(path).read_text()
    assert "SECRET" not in raw
    assert read_news(path)["ci"] == GITHUB_CI


def test_github_actions_metadata():
    assert ci_metadata(GITHUB_CI) == {
        "ci": "github-actions",
        "ci_repository": "acme/shop",
        "ci_workflow": "claude-review",
        "ci_run_id": "9876543210",
        "ci_run_attempt": "2",
        "ci_run_url": "https://github.com/acme/shop/actions/runs/9876543210",
        "ci_commit": "0123456789abcdef0123456789abcdef01234567",
        "ci_event": "pull_request",
        "ci_pr": "482",
    }
    push = ci_metadata({**GITHUB_CI, "GITHUB_REF": "refs/heads/main", "GITHUB_SERVER_URL": "https://user:pw@ghe.example/"})
    assert "ci_pr" not in push and push["ci_run_url"] == "https://ghe.example/acme/shop/actions/runs/9876543210"


def test_gitlab_and_generic_ci_metadata():
    gitlab = {
        "CI": "true",
        "GITLAB_CI": "true",
        "CI_PROJECT_PATH": "acme/shop",
        "CI_PIPELINE_ID": "555",
        "CI_PIPELINE_URL": "https://gitlab.example/acme/shop/-/pipelines/555",
        "CI_JOB_ID": "777",
        "CI_JOB_URL": "https://gitlab.example/acme/shop/-/jobs/777",
        "CI_COMMIT_SHA": "fedcba9876543210fedcba9876543210fedcba98",
        "CI_MERGE_REQUEST_IID": "12",
    }
    meta = ci_metadata(gitlab)
    assert meta["ci"] == "gitlab-ci" and meta["ci_pr"] == "12" and meta["ci_run_url"].endswith("/pipelines/555")
    assert meta["ci_repository"] == "acme/shop" and meta["ci_commit"].startswith("fedcba")
    assert ci_metadata({"CI": "true"}) == {"ci": "ci"}
    assert ci_metadata({"CI": "false"}) == {} == ci_metadata({})


# ============================================================================ per event, through the worker


def _log() -> logging.Logger:
    log = logging.getLogger("test-trace-settings")
    log.addHandler(logging.NullHandler())
    log.propagate = False
    return log


def _queued(paths: Paths) -> list[dict]:
    if not os.path.exists(paths.queue):
        return []
    return [json.loads(line) for line in pathlib.Path(paths.queue).read_bytes().splitlines() if line.strip()]


def test_each_event_gets_the_tags_environment_and_ci_of_its_own_process(tmp_path):
    """Two projects, one worker: project A (settings.local.json env: tags, environment, in CI) and
    project B (nothing set). The worker's own environment has other values, which never apply."""
    paths = Paths(str(tmp_path / "state"))
    worker_env = hook_process_env(tmp_path, CC_LANGFUSE_TAGS="worker-tag", CC_LANGFUSE_ENVIRONMENT="worker-env", **GITHUB_CI)
    a = Transcript(str(tmp_path / "a" / f"{SID}.jsonl"), session_id=SID, cwd=str(tmp_path / "a"))
    b = Transcript(str(tmp_path / "b" / "b-session.jsonl"), session_id="b-session", cwd=str(tmp_path / "b"))
    a.simple_turn("question a", "answer a")
    b.simple_turn("question b", "answer b")
    env_a = hook_process_env(tmp_path, CC_LANGFUSE_TAGS="team-a, nightly", CC_LANGFUSE_ENVIRONMENT="ci", **GITHUB_CI, **CI_SECRETS)
    env_b = hook_process_env(tmp_path, CC_LANGFUSE_HOSTNAME="false")
    os.makedirs(paths.dir, exist_ok=True)
    write_news(paths.inbox, json.dumps(stop_event(a, "answer a")).encode(), env_a)
    write_news(paths.inbox, json.dumps(stop_event(b, "answer b")).encode(), env_b)
    assert process_inbox(paths, _log(), base_env=worker_env, final=True).handled == 2
    by_session = {r["trace"]["session_id"]: r["trace"] for r in _queued(paths)}
    ta, tb = by_session[SID], by_session["b-session"]
    assert ta["tags"] == ["claude-code", "a", "team-a", "nightly"]
    assert ta["environment"] == "ci" and ta["release"] == "2.1.328"
    assert ta["metadata"]["host"] == socket.gethostname()
    assert ta["metadata"]["ci_pr"] == "482" and ta["metadata"]["ci_run_url"].endswith("/runs/9876543210")
    assert tb["tags"] == ["claude-code", "b"] and "environment" not in tb and tb["release"] == "2.1.328"
    assert "host" not in tb["metadata"] and not any(k.startswith("ci") for k in tb["metadata"])
    assert "SECRET" not in pathlib.Path(paths.queue).read_text()


def test_hook_to_standin_carries_environment_release_tags_host_and_ci(tmp_path, langfuse_standin):  # noqa: F811
    """The whole path: hook process (per-project env) -> news -> worker -> sender -> OTLP."""
    t = Transcript(str(tmp_path / "proj" / f"{SID}.jsonl"), session_id=SID, cwd=str(tmp_path / "proj"))
    t.simple_turn("ship it", "shipped")
    env = hook_process_env(
        tmp_path,
        CC_LANGFUSE_BASE_URL=langfuse_standin.base_url,
        CC_LANGFUSE_PUBLIC_KEY=langfuse_standin.public_key,
        CC_LANGFUSE_SECRET_KEY=langfuse_standin.secret_key,
        CC_LANGFUSE_TAGS="team-a,team-a, nightly ",
        CC_LANGFUSE_ENVIRONMENT="ci",
        **GITHUB_CI,
        **CI_SECRETS,
    )
    proc = subprocess.run([sys.executable, "-I", HOOK], input=json.dumps(stop_event(t, "shipped")).encode(), env=env, capture_output=True)
    assert proc.returncode == 0 and proc.stdout == b""
    wait_for_worker(env["CC_LANGFUSE_STATE_DIR"])
    obs = langfuse_standin.observations()
    assert obs, (pathlib.Path(env["CC_LANGFUSE_STATE_DIR"]) / "langfuse_hook.log").read_text()
    for o in obs:
        assert o.environment == "ci"
        assert o.release == "2.1.328"
        assert o.tags == ["claude-code", "proj", "team-a", "nightly"]
        assert o.trace_metadata["host"] == socket.gethostname()
        assert o.trace_metadata["ci_repository"] == "acme/shop" and o.trace_metadata["ci_pr"] == "482"
    assert "SECRET" not in json.dumps([o.span for o in obs], default=str)


def test_the_sender_never_stamps_the_workers_own_environment_or_release(monkeypatch, langfuse_standin):  # noqa: F811
    """The SDK takes LANGFUSE_TRACING_ENVIRONMENT / LANGFUSE_RELEASE / GITHUB_SHA from the worker's
    environment for every span; the record's values (or none) must win."""
    monkeypatch.setenv("LANGFUSE_TRACING_ENVIRONMENT", "worker-env")
    monkeypatch.setenv("LANGFUSE_RELEASE", "worker-release")
    token = secrets.token_hex(6)
    standin_keys = (langfuse_standin.public_key, langfuse_standin.secret_key)
    langfuse_standin.public_key, langfuse_standin.secret_key = f"pk-lf-env-{token}", f"sk-lf-env-{token}"  # a fresh SDK client
    try:
        sender = Sender(SendSettings(langfuse_standin.public_key, langfuse_standin.secret_key, langfuse_standin.base_url, 5.0))
        runner = HookRunner(str(pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"env-{token}"))
        t = Transcript(str(pathlib.Path(runner.paths.dir) / "p" / f"{SID}.jsonl"), session_id=SID)
        t.simple_turn("one", "two")
        (rec,) = runner.run(stop_event(t, "two"))
        assert sender.send(rec).outcome == "accepted"
        for o in langfuse_standin.observations():
            assert o.environment == "default" and o.release == "2.1.328"
        langfuse_standin.clear()
        rec["trace"]["environment"] = "staging"
        rec["trace"]["release"] = ""
        assert sender.send(rec).outcome == "accepted"
        for o in langfuse_standin.observations():
            assert o.environment == "staging" and o.release is None
        sender.close()
    finally:
        langfuse_standin.public_key, langfuse_standin.secret_key = standin_keys


# ============================================================================ CC_LANGFUSE_CONTENT=off

SECRET_WORDS = [
    "ZEBRAPROMPT",
    "ZEBRAANSWER",
    "ZEBRATHINK",
    "ZEBRATOOLIN",
    "ZEBRATOOLOUT",
    "ZEBRAERROR",
    "ZEBRAAGENTDESC",
    "ZEBRAAGENTPROMPT",
    "ZEBRAAGENTANSWER",
    "ZEBRAARGS",
    "ZEBRAEXPANSION",
    "ZEBRAFEEDBACK",
]


def rich_session(tmp_path) -> tuple[Transcript, list[dict]]:
    """Every kind of text a turn can carry, each a distinctive word; returns the events to run."""
    t = Transcript(str(tmp_path / "proj" / f"{SID}.jsonl"), session_id=SID, cwd=str(tmp_path / "proj"))
    events = []
    t.prompt("please ZEBRAPROMPT the repo")
    bash = tool_use("Bash", {"command": "grep ZEBRATOOLIN .", "description": "search ZEBRATOOLIN"})
    t.respond(thinking("I will ZEBRATHINK first"), text("Looking ZEBRAANSWER."), bash)
    t.tool_results((bash["id"], "found ZEBRATOOLOUT here"), tool_use_result={"stdout": "found ZEBRATOOLOUT here", "interrupted": False})
    bad = tool_use("Read", {"file_path": "/ZEBRATOOLIN/x"})
    t.respond(bad)
    t.tool_results((bad["id"], "ZEBRAERROR: no such file", True))
    call = tool_use("Agent", {"description": "ZEBRAAGENTDESC", "prompt": "ZEBRAAGENTPROMPT", "subagent_type": "code-reviewer"})
    t.respond(call)
    agent = t.subagent("c91d7d2e9f0a1b2c3", call["id"], agent_type="code-reviewer", description="ZEBRAAGENTDESC")
    agent.agent_prompt("ZEBRAAGENTPROMPT")
    agent.respond(text("ZEBRAAGENTANSWER"), out_tokens=20)
    events.append(subagent_stop_event(t, agent, agent_type="code-reviewer", last_assistant_message="ZEBRAAGENTANSWER"))
    t.tool_results((call["id"], [text("ZEBRAAGENTANSWER")]), tool_use_result={"status": "completed", "agentId": agent.agent_id})
    t.respond(text("Done: ZEBRAANSWER."))
    t.stop_hook_summary()
    t.turn_duration()
    events.append(stop_event(t, "Done: ZEBRAANSWER."))
    t.slash_command("/review", "ZEBRAARGS", "Review ZEBRAEXPANSION carefully")
    t.respond(text("Reviewed ZEBRAANSWER"))
    t.stop_feedback("Stop hook: also ZEBRAFEEDBACK")
    t.respond(text("Reviewed again ZEBRAANSWER"))
    t.interrupt()
    t.turn_duration()
    events.append(stop_event(t, "Reviewed ZEBRAANSWER"))
    return t, events


def test_content_on_control_the_words_do_reach_the_queue(tmp_path):
    """The control for the test below: with content on, the distinctive words are in the queue."""
    _, events = rich_session(tmp_path)
    runner = HookRunner(str(tmp_path / "state"))
    for ev in events:
        runner.run(ev)
    raw = pathlib.Path(runner.paths.queue).read_text()
    assert [w for w in SECRET_WORDS if w not in raw] == []


def test_content_off_queues_structure_and_no_text(tmp_path):
    _, events = rich_session(tmp_path)
    runner = HookRunner(str(tmp_path / "state"), content=False)
    for ev in events:
        runner.run(ev)
    raw = pathlib.Path(runner.paths.queue).read_text()
    assert [w for w in SECRET_WORDS if w in raw] == []
    assert "ZEBRA" not in raw
    turns = sorted(runner.latest().values(), key=lambda r: r["trace"]["metadata"]["turn_number"])
    first, second = turns
    assert first["trace"]["name"] == "prompt 1" and root(first)["name"] == "prompt 1"
    assert second["trace"]["name"] == "slash-command 2"
    assert root(first)["metadata"]["content"] == "off"
    assert sorted(o["name"] for o in observations(first, "tool")) == ["Agent", "Bash", "Read"]
    (agent,) = observations(first, "agent")
    assert agent["name"] == "Subagent: code-reviewer"
    gens = observations(first, "generation")
    assert gens and all(g["model"] == "claude-opus-5-5" and g["usage_details"]["output"] > 0 for g in gens)
    assert all(o["input"] is None and o["output"] is None for o in first["observations"])
    (error,) = [o for o in observations(first, "tool") if o["level"] == "ERROR"]
    assert error["status_message"] == "(text not sent: CC_LANGFUSE_CONTENT=off)"
    assert root(second)["level"] == "WARNING" and root(second)["status_message"] == "interrupted by the user"
    assert first["trace"]["metadata"]["project"] == "proj" and first["trace"]["tags"] == ["claude-code", "proj"]


def test_content_off_from_a_projects_hook_env_reaches_nothing_in_langfuse(tmp_path, langfuse_standin):  # noqa: F811
    """Subprocess hook with CC_LANGFUSE_CONTENT=off in its environment -> worker -> stand-in."""
    _, events = rich_session(tmp_path)
    env = hook_process_env(
        tmp_path,
        CC_LANGFUSE_BASE_URL=langfuse_standin.base_url,
        CC_LANGFUSE_PUBLIC_KEY=langfuse_standin.public_key,
        CC_LANGFUSE_SECRET_KEY=langfuse_standin.secret_key,
        CC_LANGFUSE_CONTENT="off",
    )
    for ev in events:
        proc = subprocess.run([sys.executable, "-I", HOOK], input=json.dumps(ev).encode(), env=env, capture_output=True)
        assert proc.returncode == 0
    wait_for_worker(env["CC_LANGFUSE_STATE_DIR"])
    obs = langfuse_standin.observations()
    assert len(langfuse_standin.traces()) == 2
    dump = json.dumps([o.span for o in obs], default=str)
    assert [w for w in SECRET_WORDS if w in dump] == []
    assert {o.trace_name for o in obs} == {"prompt 1", "slash-command 2"}
    assert {o.name for o in obs if o.type == "tool"} == {"Agent", "Bash", "Read"}
    assert all(o.usage_details for o in obs if o.type == "generation")
    assert list_news(os.path.join(env["CC_LANGFUSE_STATE_DIR"], "inbox")) == []
