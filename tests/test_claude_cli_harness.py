"""Proves the offline harness: the real Claude Code CLI, the scripted Messages API, real hooks.

A probe hook (registered for Stop, SubagentStop and SessionEnd) appends every event's stdin JSON,
plus what the transcript held at that moment, to a file the tests read back.
"""

from __future__ import annotations

import json
import sys
import textwrap
import urllib.error
import urllib.request
import uuid

import pytest
from fake_messages_api import FakeMessagesAPI, Script, api_error, reply, text, thinking, tool_use, usage
from fixtures_claude_cli import HOOK_EVENTS, hook_command, read_jsonl, run_claude, write_hook_settings

PROBE = textwrap.dedent("""
    import json, os, sys
    event, out = sys.argv[1], sys.argv[2]
    raw = sys.stdin.read()
    data = json.loads(raw) if raw.strip() else {}
    seen = {}
    for key in ("transcript_path", "agent_transcript_path"):
        path = data.get(key)
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                seen[key] = fh.read().count("\\n")
    with open(out, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"event": event, "stdin": data, "lines_on_disk": seen}) + "\\n")
""")


@pytest.fixture
def probe(claude_home, tmp_path):
    """Registers the probe for Stop/SubagentStop/SessionEnd; returns a reader of its records."""
    script = tmp_path / "probe_hook.py"
    script.write_text(PROBE)
    out = tmp_path / "probe.jsonl"
    write_hook_settings(claude_home, {e: [hook_command(sys.executable, script, e, out)] for e in HOOK_EVENTS})

    def records(event: str | None = None) -> list[dict]:
        rows = read_jsonl(out) if out.exists() else []
        return [r for r in rows if event is None or r["event"] == event]

    return records


def assistant_texts(lines: list[dict]) -> list[str]:
    return [b["text"] for d in lines if d.get("type") == "assistant" for b in d["message"]["content"] if b.get("type") == "text"]


def tool_results(lines: list[dict]) -> list[dict]:
    return [
        b
        for d in lines
        if d.get("type") == "user" and isinstance(d["message"]["content"], list)
        for b in d["message"]["content"]
        if b.get("type") == "tool_result"
    ]


def result_text(block: dict) -> str:
    content = block.get("content")
    if isinstance(content, list):
        return "".join(c.get("text", "") for c in content if isinstance(c, dict))
    return content or ""


# ---- the fake API alone (no CLI needed) -------------------------------------------------------


def _post(url: str, body: dict, headers: dict | None = None) -> tuple[int, str]:
    req = urllib.request.Request(
        url + "/v1/messages", data=json.dumps(body).encode(), headers={"content-type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


MAIN_BODY = {"model": "m", "max_tokens": 10, "tools": [{"name": "Bash"}], "messages": [{"role": "user", "content": "hi"}]}


def test_fake_api_streams_scripted_blocks_in_sse_order():
    script = [
        reply(
            thinking("hmm", signature="sig-1"),
            "Hello",
            tool_use("Bash", {"command": "ls"}, id="toolu_1"),
            usage=usage(3, 5, cache_read=7, cache_5m=11, cache_1h=13),
        )
    ]
    with FakeMessagesAPI(script) as api:
        status, raw = _post(api.url, dict(MAIN_BODY, stream=True))
    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: ")]
    assert status == 200
    assert [e["type"] for e in events] == (
        ["message_start"]
        + ["content_block_start", "content_block_delta", "content_block_delta", "content_block_stop"]
        + ["content_block_start", "content_block_delta", "content_block_stop"] * 2
        + ["message_delta", "message_stop"]
    )
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert deltas[1] == {"type": "signature_delta", "signature": "sig-1"}
    assert json.loads(deltas[3]["partial_json"]) == {"command": "ls"}
    final = events[-2]
    assert final["delta"]["stop_reason"] == "tool_use"
    assert final["usage"]["cache_creation"] == {"ephemeral_5m_input_tokens": 11, "ephemeral_1h_input_tokens": 13}
    assert final["usage"]["cache_creation_input_tokens"] == 24


def test_fake_api_routes_subagents_errors_and_exhaustion():
    script = Script(main=[api_error(529), reply("main one")], agents={"SUBTASK-9": [reply("agent one")]})
    agent_body = dict(MAIN_BODY, messages=[{"role": "user", "content": "SUBTASK-9: do it"}])
    with FakeMessagesAPI(script) as api:
        first = _post(api.url, MAIN_BODY)
        agent = _post(api.url, agent_body, {"x-claude-code-agent-id": "a123"})
        second = _post(api.url, MAIN_BODY)
        exhausted = _post(api.url, MAIN_BODY)
        side = _post(api.url, dict(MAIN_BODY, tools=[]))
    assert first[0] == 529 and json.loads(first[1])["error"]["type"] == "overloaded_error"
    assert json.loads(agent[1])["content"] == [text("agent one")]
    assert json.loads(second[1])["content"] == [text("main one")]
    assert exhausted[0] == 400 and "no reply left for the main conversation" in exhausted[1]
    assert side[0] == 200
    assert [(r["kind"], r["agent_id"]) for r in api.requests] == [
        ("main", None),
        ("agent", "a123"),
        ("main", None),
        ("main", None),
        ("side", None),
    ]
    assert api.unused() == {}


# ---- the real CLI -----------------------------------------------------------------------------


@pytest.mark.e2e
def test_simple_turn_writes_transcript_and_fires_hooks(claude_cli, claude_home, claude_project, probe):
    answer = "Hello from the fake API " + uuid.uuid4().hex[:8]
    run = run_claude(
        claude_home, claude_project, "say hello", [reply(answer, usage=usage(100, 20, cache_read=50, cache_5m=30, cache_1h=10))]
    )
    result, session_id, transcript = run

    assert result["result"] == answer
    assert transcript is not None and transcript.name == session_id + ".jsonl"
    lines = read_jsonl(transcript)
    assistant = [d for d in lines if d["type"] == "assistant"]
    assert assistant_texts(lines) == [answer]
    assert assistant[0]["message"]["model"] == "claude-sonnet-4-5-20250929"
    assert assistant[0]["message"]["usage"]["cache_creation"] == {"ephemeral_5m_input_tokens": 30, "ephemeral_1h_input_tokens": 10}

    (stop,) = probe("Stop")
    assert stop["stdin"]["transcript_path"] == str(transcript)
    assert stop["stdin"]["session_id"] == session_id
    assert stop["stdin"]["last_assistant_message"] == answer
    (end,) = probe("SessionEnd")
    assert end["stdin"]["session_id"] == session_id
    assert [r["event"] for r in probe()] == ["Stop", "SessionEnd"]

    summaries = [d for d in lines if d["type"] == "system" and d.get("subtype") == "stop_hook_summary"]
    assert len(summaries) == 1
    assert "probe_hook.py" in summaries[0]["hookInfos"][0]["command"]
    assert isinstance(summaries[0]["hookInfos"][0]["durationMs"], int)
    assert [r["kind"] for r in run.api.requests] == ["main"]


@pytest.mark.e2e
def test_resume_appends_to_the_same_transcript(claude_cli, claude_home, claude_project, probe):
    first = run_claude(claude_home, claude_project, "first prompt", [reply("First answer.")])
    before = first.transcript.read_bytes()
    second = run_claude(claude_home, claude_project, "second prompt", [reply("Second answer.")], resume=first.session_id)

    assert second.session_id == first.session_id
    assert second.transcript == first.transcript
    after = second.transcript.read_bytes()
    assert after.startswith(before) and len(after) > len(before)
    assert assistant_texts(second.lines()) == ["First answer.", "Second answer."]
    stops = probe("Stop")
    assert [s["stdin"]["last_assistant_message"] for s in stops] == ["First answer.", "Second answer."]
    assert stops[0]["stdin"]["prompt_id"] != stops[1]["stdin"]["prompt_id"]
    # The resumed request carried the first turn back to the API.
    resumed = second.api.requests[0]["body"]["messages"]
    assert any(m["role"] == "assistant" and "First answer." in json.dumps(m) for m in resumed)


@pytest.mark.e2e
def test_bash_tool_call_result_lands_in_transcript(claude_cli, claude_home, claude_project, probe):
    marker = "hi-" + uuid.uuid4().hex[:8]
    script = [
        reply(
            thinking("I will run echo."),
            "Running it.",
            tool_use("Bash", {"command": "echo " + marker, "description": "echo"}, id="toolu_echo"),
        ),
        reply("It printed the marker."),
    ]
    run = run_claude(claude_home, claude_project, "run echo", script)
    lines = run.lines()

    (result,) = tool_results(lines)
    assert result["tool_use_id"] == "toolu_echo"
    assert result_text(result) == marker
    assert result.get("is_error") is False
    blocks = [d["message"]["content"][0]["type"] for d in lines if d["type"] == "assistant"]
    assert blocks == ["thinking", "text", "tool_use", "text"]
    # Claude Code sent the real command output back to the model.
    second_request = json.dumps(run.api.requests_of("main")[1]["body"]["messages"])
    assert marker in second_request
    assert probe("Stop")[0]["stdin"]["last_assistant_message"] == "It printed the marker."


@pytest.mark.e2e
def test_parallel_tool_results_come_back_in_completion_order(claude_cli, claude_home, claude_project, probe):
    script = [
        reply(
            "Both at once.",
            tool_use("Bash", {"command": "sleep 1.5; echo slow", "description": "slow"}, id="toolu_slow"),
            tool_use("Bash", {"command": "echo fast", "description": "fast"}, id="toolu_fast"),
        ),
        reply("Done."),
    ]
    run = run_claude(claude_home, claude_project, "run two", script)
    lines = run.lines()

    uses = [
        d["message"]["content"][0]["id"] for d in lines if d["type"] == "assistant" and d["message"]["content"][0]["type"] == "tool_use"
    ]
    assert uses == ["toolu_slow", "toolu_fast"]
    assert len({d["message"]["id"] for d in lines if d["type"] == "assistant" and d["message"]["content"][0]["type"] == "tool_use"}) == 1
    results = {r["tool_use_id"]: result_text(r) for r in tool_results(lines)}
    assert results == {"toolu_slow": "slow", "toolu_fast": "fast"}
    assert [r["tool_use_id"] for r in tool_results(lines)] == ["toolu_fast", "toolu_slow"]


@pytest.mark.e2e
def test_failing_tools_are_marked_is_error(claude_cli, claude_home, claude_project, probe):
    script = [
        reply(
            tool_use("Bash", {"command": "echo oops >&2; exit 3", "description": "fail"}, id="toolu_exit3"),
            tool_use("Read", {"file_path": str(claude_project / "missing.txt")}, id="toolu_missing"),
        ),
        reply("Both failed."),
    ]
    run = run_claude(claude_home, claude_project, "fail please", script)
    results = {r["tool_use_id"]: r for r in tool_results(run.lines())}

    assert results["toolu_exit3"]["is_error"] is True
    assert "Exit code 3" in result_text(results["toolu_exit3"])
    assert results["toolu_missing"]["is_error"] is True
    assert "does not exist" in result_text(results["toolu_missing"])
    assert run.result["result"] == "Both failed."


@pytest.mark.e2e
def test_background_agent_run_shows_up_in_files_and_hooks(claude_cli, claude_home, claude_project, probe):
    script = Script(
        main=[
            reply(
                "Delegating.",
                tool_use(
                    "Agent",
                    {"description": "count files", "prompt": "SUBTASK-1: count the files", "subagent_type": "general-purpose"},
                    id="toolu_agent1",
                ),
            ),
            reply("Launched; waiting."),
            reply("The subagent reported back."),
        ],
        agents={
            "SUBTASK-1": [
                reply(tool_use("Bash", {"command": "echo three", "description": "count"}, id="toolu_sub")),
                reply("There are 3 files.", delay=0.5),
            ]
        },
    )
    run = run_claude(claude_home, claude_project, "delegate counting", script)
    lines = run.lines()

    # Launch stub, not a result.
    (launch,) = [
        d
        for d in lines
        if d["type"] == "user"
        and isinstance(d["message"]["content"], list)
        and d["message"]["content"][0].get("tool_use_id") == "toolu_agent1"
    ]
    assert launch["toolUseResult"]["status"] == "async_launched"
    agent_id = launch["toolUseResult"]["agentId"]

    subdir = run.transcript.parent / run.session_id / "subagents"
    meta = json.loads((subdir / ("agent-%s.meta.json" % agent_id)).read_text())
    assert meta["toolUseId"] == "toolu_agent1" and meta["agentType"] == "general-purpose"
    agent_lines = read_jsonl(subdir / ("agent-%s.jsonl" % agent_id))
    assert assistant_texts(agent_lines) == ["There are 3 files."]
    assert all(d.get("isSidechain") for d in agent_lines if d["type"] in ("user", "assistant"))

    (sub_stop,) = probe("SubagentStop")
    assert sub_stop["stdin"]["agent_id"] == agent_id
    assert sub_stop["stdin"]["agent_transcript_path"] == str(subdir / ("agent-%s.jsonl" % agent_id))
    assert sub_stop["stdin"]["last_assistant_message"] == "There are 3 files."

    notes = [d for d in lines if d["type"] == "user" and (d.get("origin") or {}).get("kind") == "task-notification"]
    assert len(notes) == 1 and "<tool-use-id>toolu_agent1</tool-use-id>" in notes[0]["message"]["content"]
    stops = probe("Stop")
    assert [s["stdin"]["last_assistant_message"] for s in stops] == ["Launched; waiting.", "The subagent reported back."]
    assert stops[0]["stdin"]["background_tasks"][0]["id"] == agent_id
    assert stops[1]["stdin"]["prompt_id"] == notes[0]["promptId"] != stops[0]["stdin"]["prompt_id"]
    assert [r["event"] for r in probe()] == ["Stop", "SubagentStop", "Stop", "SessionEnd"]

    assert [r["agent_id"] for r in run.api.requests_of("agent")] == [agent_id, agent_id]
    assert run.api.unused() == {}


@pytest.mark.e2e
def test_overloaded_api_is_retried_and_recorded(claude_cli, claude_home, claude_project, probe):
    run = run_claude(claude_home, claude_project, "hello", [api_error(529), reply("After retry.")])
    lines = run.lines()

    assert run.result["result"] == "After retry."
    (err,) = [d for d in lines if d["type"] == "system" and d.get("subtype") == "api_error"]
    assert err["error"]["status"] == 529 and err["retryAttempt"] == 1
    assert [r["answer"]["status"] for r in run.api.requests] == [529, 200]
    assert assistant_texts(lines) == ["After retry."]


@pytest.mark.e2e
def test_exhausted_script_fails_the_turn_with_a_clear_message(claude_cli, claude_home, claude_project, probe):
    run = run_claude(claude_home, claude_project, "hello", [], check=False)

    assert run.returncode != 0 and run.result["is_error"] is True
    assert "no reply left for the main conversation" in run.result["result"]
    # An API failure gives no Stop in -p mode, only SessionEnd.
    assert [r["event"] for r in probe()] == ["SessionEnd"]
    (synthetic,) = [d for d in run.lines() if d["type"] == "assistant"]
    assert synthetic["message"]["model"] == "<synthetic>"
