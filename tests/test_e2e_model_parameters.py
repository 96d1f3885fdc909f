"""Real Claude Code CLI 2.1.328 (offline, scripted Messages API) -> hook -> Langfuse stand-in:
fast mode reaches Langfuse as model parameters, generations carry their input, and thinking
Claude Code did not record is marked omitted (issue 10, points 1, 4, 10).

Fast mode in `-p` runs: `--settings '{"fastMode": true}'` (flag settings opt the Agent SDK/-p
session in; user settings alone do not). Claude Code then sends `speed: "fast"` with the
`fast-mode-2026-02-01` beta, and records the response's `usage.speed`.
"""

from __future__ import annotations

import json

from fake_messages_api import reply, thinking, tool_use, usage
from test_e2e_cli import Traced, traced  # noqa: F401 - the fixture

OPUS = "claude-opus-5-5"


def _generations(rig: Traced, session_id: str) -> list:
    gens = [o for o in rig.standin.observations() if o.type == "generation" and o.session_id == session_id]
    return sorted(gens, key=lambda o: o.start_ns)


def test_fast_mode_run_sends_speed_fast_as_model_parameters(traced):  # noqa: F811
    run = traced.run(
        "say hi",
        [reply(thinking(""), "Hi!", usage=usage(100, 20, cache_5m=300), model=OPUS)],
        expect_result="Hi!",
        extra_args=["--settings", json.dumps({"fastMode": True})],
    )
    body = run.api.requests[-1]["body"]
    assert body.get("speed") == "fast", "Claude Code did not ask for fast mode: %s" % {k: body.get(k) for k in ("speed", "betas")}
    traced.wait_delivered(lambda: len(_generations(traced, run.session_id)) == 1)
    (gen,) = _generations(traced, run.session_id)
    raw = gen.attributes["langfuse.observation.model.parameters"]
    print("fast-mode generation (real CLI): model", gen.model, "model parameters", raw, "usage", gen.usage_details)
    params = json.loads(raw)
    assert params["speed"] == "fast"  # Langfuse's "Fast mode" price tier: model_parameters.speed == "fast"
    assert params["effort"] == body["output_config"]["effort"]
    assert params["max_tokens"] == body["max_tokens"]
    assert params["thinking"] == body["thinking"]["type"] and params["thinking_display"] == "omitted"
    assert gen.metadata.get("speed") == "fast"  # kept in metadata too
    assert gen.model == OPUS
    assert gen.usage_details == {
        "input": 100,
        "output": 20,
        "cache_read_input_tokens": 0,
        "input_cache_creation_5m": 300,
        "input_cache_creation_1h": 0,
    }
    # input: the prompt; output: the thinking block marked omitted, then the answer
    assert gen.input == [{"role": "user", "content": "say hi"}]
    thought, answer = gen.output["content"]
    assert thought["type"] == "thinking" and thought["omitted"] is True and "showThinkingSummaries" in thought["note"]
    assert answer == {"type": "text", "text": "Hi!"}
    st = traced.status()
    assert st["thinking_omitted_sessions"] == [run.session_id]
    assert any("--thinking-display summarized" in w for w in st["warnings"])
    doctor = traced.hook_cli("doctor", check=False).stdout
    assert "note  thinking text in traces" in doctor and run.session_id in doctor


def test_standard_run_with_thinking_summaries_and_a_tool(traced):  # noqa: F811
    call = tool_use("Bash", {"command": "echo hi"}, id="toolu_e2e_params_1")
    run = traced.run(
        "run echo hi",
        [reply(thinking("I will run it.", "sig-1"), call, model=OPUS), reply(thinking("It printed hi.", "sig-2"), "Done: hi.", model=OPUS)],
        expect_result="Done: hi.",
        extra_args=["--thinking-display", "summarized"],
    )
    assert run.api.requests[-1]["body"]["thinking"].get("display") == "summarized"
    assert "speed" not in run.api.requests[-1]["body"]
    traced.wait_delivered(lambda: len(_generations(traced, run.session_id)) == 2)
    g1, g2 = _generations(traced, run.session_id)
    # Claude Code records speed "standard" for a standard call: Langfuse's default price applies
    assert g1.model_parameters.get("speed") == "standard" and g1.model_parameters["thinking_display"] == "summarized"
    assert g1.input == [{"role": "user", "content": "run echo hi"}]
    assert g2.input == [{"role": "tool", "tool_use_id": "toolu_e2e_params_1", "name": "Bash", "content": "hi"}]
    assert g1.output["content"][0] == {"type": "thinking", "thinking": "I will run it."}
    assert g2.output["content"][0] == {"type": "thinking", "thinking": "It printed hi."}
    assert traced.status()["thinking_omitted_sessions"] == []
