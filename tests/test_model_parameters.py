"""Issue 10, points 1, 3, 4 and 10: what a generation carries besides its output.

- model parameters (speed, service tier, effort, max_tokens, thinking) from the transcript, sent as
  `langfuse.observation.model.parameters` (Langfuse's price tiers select fast mode on them);
- the cache-write figure: total or 5m/1h split, never both;
- input: what was added to the conversation since the previous API call;
- thinking blocks Claude Code recorded without text are marked omitted, and `status`/`doctor` say so.
"""

from __future__ import annotations

import json
import time

import pytest
from claude_code_langfuse import records as R
from claude_code_langfuse.commands import collect_status, thinking_omitted_sessions
from claude_code_langfuse.config import Settings
from claude_code_langfuse.sender import Sender, SendSettings
from claude_code_langfuse.transcript import BIG_LINE
from hypothesis import given, settings
from hypothesis import strategies as st
from transcript_factory import (
    MODEL,
    HookRunner,
    observations,
    stop_event,
    text,
    thinking,
    tool_use,
    usage,
)

FAST_PARAMS = {
    "model": MODEL,
    "betas": ["claude-code-20250219", "fast-mode-2026-02-01"],
    "max_tokens": 128000,
    "thinking": {"type": "adaptive", "display": "omitted"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "output_config": {"effort": "medium"},
    "speed": "fast",
}


def api_call(t, *blocks, params=None, u=None, tail=0, msg_id=None, line_fields=None, model=MODEL):
    """One API call as 2.1.328 writes it: an `api-request` line (params; `tail` message hashes make
    it a big line), then one assistant line per block carrying requestRef and the per-call fields."""
    ref = f"req-{len(t.rows)}-{t.session_id[:8]}"
    request = {
        "type": "api-request",
        "sessionId": t.session_id,
        "id": ref,
        "timestamp": t.clock.tick(),
        "version": "2.1.328",
        "querySource": "sdk",
        "shapeHash": "ab" * 32,
        "params": params if params is not None else FAST_PARAMS,
        "keep": 0,
        "tail": ["cd" * 32] * tail,
    }
    t.write(request)
    final = u or usage()
    mid = msg_id or f"msg_{ref}"
    stop = "tool_use" if any(b.get("type") == "tool_use" for b in blocks) else "end_turn"
    rows = []
    for i, b in enumerate(blocks):
        message = {"model": model, "id": mid, "type": "message", "role": "assistant", "content": [b], "stop_reason": stop, "usage": final}
        fields = {"message": message, "requestId": f"r{mid}", "apiBlockIndex": i, "requestRef": ref, "requestedModel": MODEL}
        fields.update(line_fields if line_fields is not None else {"effort": "medium", "thinkingDisplay": "omitted"})
        rows.append(t.write(t.envelope("assistant", **fields)))
    return rows


def fast_usage(speed="fast", tier="standard"):
    u = usage(input_tokens=100, output_tokens=20, cache_read=0, cache_5m=300, cache_1h=0)
    u.update(speed=speed, service_tier=tier, inference_geo="")
    return u


def generations(record):
    return observations(record, "generation")


# ---------------------------------------------------------------------------- 1. model parameters


def test_fast_mode_generation_carries_its_speed_as_model_parameters(session, runner):
    session.prompt("say hi")
    api_call(session, thinking(""), text("Hi!"), u=fast_usage())
    session.stop_hook_summary()
    session.turn_duration()
    (rec,) = runner.run(stop_event(session, "Hi!"))
    (gen,) = generations(rec)
    assert gen["model_parameters"] == {
        "speed": "fast",
        "service_tier": "standard",
        "effort": "medium",
        "max_tokens": 128000,
        "thinking": "adaptive",
        "thinking_display": "omitted",
    }
    # kept in metadata too, for filtering
    assert gen["metadata"]["speed"] == "fast" and gen["metadata"]["effort"] == "medium"
    # only generations carry them
    assert all(o["model_parameters"] is None for o in rec["observations"] if o["type"] != "generation")


def test_billed_speed_wins_over_the_requested_one(session, runner):
    """A fast request the API answered at the standard speed (fast-mode limit) costs the standard price."""
    session.prompt("say hi")
    api_call(session, text("Hi!"), u=fast_usage(speed="standard"))
    session.stop_hook_summary()
    session.turn_duration()
    (rec,) = runner.run(stop_event(session, "Hi!"))
    assert generations(rec)[0]["model_parameters"]["speed"] == "standard"


def test_params_of_a_big_api_request_line_are_read(session, runner):
    """A long conversation's api-request line is over the reader's big-line limit (its list of
    message hashes grows): its params are still read from the line's first bytes."""
    session.prompt("say hi")
    u = fast_usage()
    del u["speed"]  # only the request says fast
    rows = api_call(session, text("Hi!"), u=u, tail=200, line_fields={})
    session.stop_hook_summary()
    session.turn_duration()
    with open(session.path, "rb") as f:
        big = [line for line in f if line.startswith(b'{"type":"api-request",')]
    assert len(big[-1]) > BIG_LINE
    (rec,) = runner.run(stop_event(session, "Hi!"))
    params = generations(rec)[0]["model_parameters"]
    assert params["speed"] == "fast" and params["effort"] == "medium" and params["max_tokens"] == 128000, params
    assert rows


def test_an_older_transcript_without_request_lines_still_gets_usage_speed(session, runner):
    session.prompt("hi")
    u = fast_usage()
    session.respond(text("Hello"), u=u)
    session.stop_hook_summary()
    session.turn_duration()
    (rec,) = runner.run(stop_event(session, "Hello"))
    assert generations(rec)[0]["model_parameters"] == {"speed": "fast", "service_tier": "standard"}


def test_model_parameters_reach_langfuse_as_the_sdk_sends_them(session, runner, langfuse_standin):
    session.prompt("say hi")
    api_call(session, thinking(""), text("Hi!"), u=fast_usage())
    session.stop_hook_summary()
    session.turn_duration()
    (rec,) = runner.run(stop_event(session, "Hi!"))
    sender = Sender(SendSettings(langfuse_standin.public_key, langfuse_standin.secret_key, langfuse_standin.base_url, 5.0))
    try:
        assert sender.send(rec).outcome == "accepted"
    finally:
        sender.close()
    (gen,) = [o for o in langfuse_standin.observations() if o.type == "generation"]
    raw = gen.attributes["langfuse.observation.model.parameters"]
    print("fast-mode generation, langfuse.observation.model.parameters =", raw)
    assert json.loads(raw) == generations(rec)[0]["model_parameters"]
    assert gen.model_parameters["speed"] == "fast"  # what Langfuse's "Fast mode" price tier matches
    assert gen.model == MODEL
    assert gen.usage_details == {
        "input": 100,
        "output": 20,
        "cache_read_input_tokens": 0,
        "input_cache_creation_5m": 300,
        "input_cache_creation_1h": 0,
    }
    # no model parameters on other observation types
    assert all(
        "langfuse.observation.model.parameters" not in o.attributes for o in langfuse_standin.observations() if o.type != "generation"
    )


@pytest.mark.parametrize("speed", ["fast", "standard"])
def test_langfuse_prices_what_we_send_at_the_fast_tier(session, runner, langfuse_standin, speed):
    """Langfuse's pricing rule (stand-in: tests/standin_models.py, its 4.16 claude-opus-5 definition
    with a "Fast mode" tier on model_parameters.speed) applied to the spans as received."""
    session.prompt("say hi")
    api_call(session, text("Hi!"), u=fast_usage(speed=speed), model="claude-opus-5")
    session.stop_hook_summary()
    session.turn_duration()
    (rec,) = runner.run(stop_event(session, "Hi!"))
    sender = Sender(SendSettings(langfuse_standin.public_key, langfuse_standin.secret_key, langfuse_standin.base_url, 5.0))
    try:
        assert sender.send(rec).outcome == "accepted"
    finally:
        sender.close()
    (gen,) = [o for o in langfuse_standin.observations() if o.type == "generation"]
    cost, tier = langfuse_standin.models.cost(gen.model, gen.usage_details, gen.model_parameters)
    print(f"{speed}: model parameters {gen.model_parameters}, usage {gen.usage_details} -> {tier} ${cost:.6f}")
    # 100 input, 20 output, 300 5m cache writes at $5/$25/$6.25 per Mtok (fast: double)
    standard = (100 * 5 + 20 * 25 + 300 * 6.25) / 1e6
    assert tier == ("Fast mode" if speed == "fast" else "Standard")
    assert cost == pytest.approx(standard * (2 if speed == "fast" else 1))


# ---------------------------------------------------------------------------- 3. cache writes: total or split, never both

CACHE_KEYS_SPLIT = {"input_cache_creation_5m", "input_cache_creation_1h"}
counts = st.one_of(st.none(), st.integers(min_value=0, max_value=10**7))


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    total=counts,
    five=counts,
    hour=counts,
    breakdown=st.booleans(),
    inp=counts,
    out=counts,
    read=counts,
)
def test_usage_never_carries_the_cache_write_total_and_its_split(total, five, hour, breakdown, inp, out, read):
    u = {"input_tokens": inp, "output_tokens": out, "cache_read_input_tokens": read, "cache_creation_input_tokens": total}
    if breakdown:
        u["cache_creation"] = {"ephemeral_5m_input_tokens": five, "ephemeral_1h_input_tokens": hour}
    got = R.usage_details({k: v for k, v in u.items() if v is not None}) or {}
    keys = set(got)
    assert not ("cache_creation_input_tokens" in keys and keys & CACHE_KEYS_SPLIT), got
    assert not keys & CACHE_KEYS_SPLIT or keys >= CACHE_KEYS_SPLIT  # the split comes whole
    # nothing written is lost: the split where the API gave one, else the total
    if breakdown and (five or hour):
        assert got["input_cache_creation_5m"] == (five or 0) and got["input_cache_creation_1h"] == (hour or 0)
    elif isinstance(total, int):
        assert got["cache_creation_input_tokens"] == total


def test_every_generation_of_a_session_has_one_cache_write_form(session, runner):
    session.prompt("go")
    call = tool_use("Bash", {"command": "ls"})
    api_call(session, call, u=usage(cache_5m=120, cache_1h=400))
    session.tool_results((call["id"], "a\nb"))
    u = usage(cache_5m=0, cache_1h=0)
    u["cache_creation_input_tokens"] = 77  # 2.1.15x: a total without its split
    api_call(session, text("done"), u=u)
    session.stop_hook_summary()
    session.turn_duration()
    (rec,) = runner.run(stop_event(session, "done"))
    g1, g2 = generations(rec)
    assert set(g1["usage_details"]) & {"cache_creation_input_tokens"} == set() and g1["usage_details"]["input_cache_creation_1h"] == 400
    assert g2["usage_details"]["cache_creation_input_tokens"] == 77 and not set(g2["usage_details"]) & CACHE_KEYS_SPLIT


# ---------------------------------------------------------------------------- 4. generation input


def test_each_generation_gets_what_was_added_since_the_previous_call(session, runner):
    session.prompt("list the files and count them")
    a, b = tool_use("Bash", {"command": "ls"}), tool_use("Read", {"file_path": "/x"})
    api_call(session, thinking("plan"), a, b)
    # parallel results come back in another order: each is paired by id
    session.tool_results((b["id"], "file x", True), (a["id"], "a\nb"))
    api_call(session, text("Two files."))
    session.stop_hook_summary()
    session.stop_feedback("Also say which is bigger.")
    api_call(session, text("a is bigger."))
    session.stop_hook_summary()
    session.turn_duration()
    (rec,) = runner.run(stop_event(session, "a is bigger."))
    g1, g2, g3 = generations(rec)
    assert g1["input"] == [{"role": "user", "content": "list the files and count them"}]
    assert g2["input"] == [
        {"role": "tool", "tool_use_id": b["id"], "name": "Read", "content": "file x", "is_error": True},
        {"role": "tool", "tool_use_id": a["id"], "name": "Bash", "content": "a\nb"},
    ]
    assert g3["input"] == [{"role": "user", "content": "Stop hook feedback:\nAlso say which is bigger."}]
    # deterministic: the same transcript read again gives the same inputs
    again = HookRunner(runner.settings.state_dir + "-again")
    (rec2,) = again.run(stop_event(session, "a is bigger."))
    assert [g["input"] for g in generations(rec2)] == [g1["input"], g2["input"], g3["input"]]


def test_queued_text_is_the_input_of_the_call_that_reads_it(session, runner):
    from transcript_factory import queue_enqueue, queued_command

    session.prompt("run the tests")
    call = tool_use("Bash", {"command": "pytest"})
    api_call(session, call)
    typed = queue_enqueue(session, "also lint")
    session.tool_results((call["id"], "3 passed"))
    queued_command(session, "also lint", typed_at=typed)
    api_call(session, text("Tests pass; linting next."))
    session.stop_hook_summary()
    session.turn_duration()
    (rec,) = runner.run(stop_event(session, "Tests pass; linting next."))
    g1, g2 = generations(rec)
    assert [m["role"] for m in g2["input"]] == ["tool", "user"]
    assert g2["input"][1]["content"] == "also lint"


def test_api_error_retry_keeps_the_prompt_for_the_call_that_answers(session, runner):
    session.prompt("hello there")
    session.api_error_message()
    session.api_error_retry()
    api_call(session, text("Hi."))
    session.stop_hook_summary()
    session.turn_duration()
    (rec,) = runner.run(stop_event(session, "Hi."))
    (gen,) = generations(rec)
    assert gen["input"] == [{"role": "user", "content": "hello there"}]


def test_generation_input_is_redacted_and_cut(session, tmp_path):
    runner = HookRunner(str(tmp_path / "state"), max_field_chars=200)
    session.prompt("deploy")
    call = tool_use("Bash", {"command": "cat .env"})
    api_call(session, call)
    secret = "sk-ant-api03-" + "A1b2C3d4" * 12
    session.tool_results((call["id"], f"ANTHROPIC_API_KEY={secret}\n"))
    api_call(session, text("ok"))
    big = "y" * 5000
    session.stop_feedback(big)
    api_call(session, text("ok again"))
    session.stop_hook_summary()
    session.turn_duration()
    (rec,) = runner.run(stop_event(session, "ok again"))
    g1, g2, g3 = generations(rec)
    assert secret not in json.dumps(g2["input"]) and "ANTHROPIC_API_KEY" in json.dumps(g2["input"])
    assert isinstance(g3["input"], str) and len(g3["input"]) < 400 and g3["metadata"]["input_truncated"]["original_length"] > 5000


def test_subagent_generations_get_their_inputs(session, runner):
    from transcript_factory import subagent_stop_event

    session.prompt("delegate")
    call = tool_use("Agent", {"description": "look", "prompt": "find foo", "subagent_type": "general-purpose"})
    session.respond(call)
    agent = session.subagent("a1b2c3d4e5f6a7b8c", call["id"], description="look")
    agent.agent_prompt("find foo")
    inner = tool_use("Bash", {"command": "grep -r foo"})
    agent.respond(inner)
    agent.tool_results((inner["id"], "x.py: foo"))
    agent.respond(text("foo is in x.py"))
    session.tool_results((call["id"], "foo is in x.py"), tool_use_result={"agentId": "a1b2c3d4e5f6a7b8c", "status": "completed"})
    session.respond(text("It is in x.py."))
    session.stop_hook_summary()
    session.turn_duration()
    runner.run(subagent_stop_event(session, agent))
    runner.run(stop_event(session, "It is in x.py."))
    rec = runner.latest()[f"turn:{R.trace_id_for(session.session_id, session.prompt_id)}"]
    agents = observations(rec, "agent")
    assert agents, [o["type"] for o in rec["observations"]]
    inner_gens = [o for o in generations(rec) if o["parent_id"] == agents[0]["id"]]
    assert [g["input"] for g in inner_gens] == [
        [{"role": "user", "content": "find foo"}],
        [{"role": "tool", "tool_use_id": inner["id"], "name": "Bash", "content": "x.py: foo"}],
    ]


# ---------------------------------------------------------------------------- 10. thinking omitted


def test_thinking_without_text_is_marked_omitted_not_an_empty_string(session, runner):
    session.prompt("think")
    api_call(session, thinking(""), text("Done."))
    session.stop_hook_summary()
    session.turn_duration()
    (rec,) = runner.run(stop_event(session, "Done."))
    (gen,) = generations(rec)
    block = gen["output"]["content"][0]
    assert block["type"] == "thinking" and block["omitted"] is True and "thinking" not in block
    assert "showThinkingSummaries" in block["note"] and "--thinking-display summarized" in block["note"]
    assert '"thinking": ""' not in json.dumps(rec)


def test_thinking_with_text_is_kept(session, runner):
    session.prompt("think")
    api_call(session, thinking("Let me see."), text("Done."))
    session.stop_hook_summary()
    session.turn_duration()
    (rec,) = runner.run(stop_event(session, "Done."))
    assert generations(rec)[0]["output"]["content"][0] == {"type": "thinking", "thinking": "Let me see."}


def _status(runner) -> dict:
    return collect_status(Settings(user_id="tester", state_dir=runner.settings.state_dir, base_url="http://127.0.0.1:9"))


def test_status_says_when_a_sessions_thinking_is_all_empty(session, runner):
    session.prompt("think")
    api_call(session, thinking(""), text("Done."))
    session.stop_hook_summary()
    session.turn_duration()
    runner.run(stop_event(session, "Done."))
    st_ = _status(runner)
    assert st_["thinking_omitted_sessions"] == [session.session_id]
    (warning,) = [w for w in st_["warnings"] if "thinking" in w]
    assert "showThinkingSummaries" in warning and "--thinking-display summarized" in warning
    # the same turn read again does not change the verdict; a later turn with text does
    session.prompt("think harder")
    api_call(session, thinking("Now with a summary."), text("Done again."))
    session.stop_hook_summary()
    session.turn_duration()
    runner.run(stop_event(session, "Done again."))
    st_ = _status(runner)
    assert st_["thinking_omitted_sessions"] == [] and not [w for w in st_["warnings"] if "thinking" in w]


def test_status_is_quiet_without_thinking_or_with_summaries(session, runner):
    session.prompt("hi")
    api_call(session, text("Hello."))
    session.stop_hook_summary()
    session.turn_duration()
    runner.run(stop_event(session, "Hello."))
    assert _status(runner)["thinking_omitted_sessions"] == []


def test_thinking_omitted_sessions_are_recent_ones_newest_first():
    now = time.time()
    state = {
        "transcripts": {
            "a": {"session_id": "old", "thinking": {"omitted": True, "shown": False, "at": now - 30 * 86400}},
            "b": {"session_id": "s1", "thinking": {"omitted": True, "shown": False, "at": now - 100}},
            "c": {"session_id": "s2", "thinking": {"omitted": True, "shown": False, "at": now - 10}},
            "d": {"session_id": "mixed", "thinking": {"omitted": True, "shown": True, "at": now}},
            # one session, two transcripts (a subagent's thinking had text): not all empty
            "e1": {"session_id": "split", "thinking": {"omitted": True, "shown": False, "at": now}},
            "e2": {"session_id": "split", "thinking": {"omitted": False, "shown": True, "at": now}},
            "f": {"session_id": "odd", "thinking": {"omitted": True, "at": "garbage"}},
            "g": {"session_id": "none"},
        }
    }
    assert thinking_omitted_sessions(state, now) == ["s2", "s1"]


def test_doctor_notes_empty_thinking_without_failing(session, runner, tmp_path, monkeypatch, capsys):
    from claude_code_langfuse import doctor

    session.prompt("think")
    api_call(session, thinking(""), text("Done."))
    session.stop_hook_summary()
    session.turn_duration()
    runner.run(stop_event(session, "Done."))
    s = Settings(user_id="tester", state_dir=runner.settings.state_dir, base_url="http://127.0.0.1:9")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    checks = doctor.run_doctor(s)
    (note,) = [c for c in checks if c[0] == "thinking text in traces"]
    assert note[1] is None and session.session_id in note[2] and "showThinkingSummaries" in note[2]
    monkeypatch.setattr(doctor, "run_doctor", lambda _s: [("x", True, "fine"), note])
    assert doctor.cmd_doctor(s) == 0  # a note is not a failure
    out = capsys.readouterr().out
    assert "note  thinking text in traces" in out


@pytest.mark.parametrize("display", ["omitted", None])
def test_model_parameters_name_the_thinking_display(session, runner, display):
    params = dict(FAST_PARAMS, thinking={"type": "enabled", "budget_tokens": 8000, **({"display": display} if display else {})})
    session.prompt("hi")
    api_call(session, text("Hello."), params=params, line_fields={})
    session.stop_hook_summary()
    session.turn_duration()
    (rec,) = runner.run(stop_event(session, "Hello."))
    p = generations(rec)[0]["model_parameters"]
    assert p["thinking"] == "enabled" and p["thinking_budget_tokens"] == 8000
    assert p.get("thinking_display") == display
