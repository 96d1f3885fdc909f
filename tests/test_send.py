"""The sender against a protocol-level Langfuse stand-in: what lands, and what each server answer means."""

from __future__ import annotations

import copy
import hashlib
import time
from datetime import UTC, datetime, timedelta

import pytest
from claude_code_langfuse.sender import Delivery, Sender, SendSettings
from langfuse_standin import LangfuseStandin

SESSION = "0d6f3c8e-5a7b-4c2e-9f10-1234567890ab"
T0 = datetime(2026, 11, 23, 20, 7, 57, 123000, tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _ms(moment: datetime) -> int:
    return int((moment - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(milliseconds=1))


def _trace_id(prompt_id: str) -> str:
    return hashlib.sha256(f"{SESSION}:{prompt_id}".encode()).hexdigest()[:32]


def _obs_id(trace_id: str, natural: str) -> str:
    return hashlib.sha256(f"{trace_id}:{natural}".encode()).hexdigest()[:16]


def _obs(trace_id, natural, parent, obs_type, name, start_ms, end_ms, **fields):
    obs = {
        "id": _obs_id(trace_id, natural),
        "parent_id": parent,
        "type": obs_type,
        "name": name,
        "start": _iso(T0 + timedelta(milliseconds=start_ms)),
        "end": _iso(T0 + timedelta(milliseconds=end_ms)),
        "input": None,
        "output": None,
        "metadata": {},
        "level": "DEFAULT",
        "status_message": None,
        "model": None,
        "usage_details": None,
        "completion_start_time": None,
    }
    obs.update(fields)
    return obs


def turn_record(prompt_id: str = "prompt-1") -> dict:
    tid = _trace_id(prompt_id)
    root = _obs(
        tid,
        "root",
        None,
        "span",
        "Claude Code turn",
        0,
        9_876,
        input="fix the failing test in parser.py",
        output="Fixed: the off-by-one in parse().",
        metadata={"transcript": "/home/alice/.claude/projects/p/s.jsonl"},
    )
    gen1 = _obs(
        tid,
        "gen:msg_01",
        root["id"],
        "generation",
        "claude-sonnet-4-5",
        12,
        2_345,
        model="claude-sonnet-4-5-20250929",
        input=[{"role": "user", "content": "fix the failing test"}],
        output=[{"type": "tool_use", "name": "Bash", "input": {"command": "pytest -x"}}],
        usage_details={
            "input": 1200,
            "output": 345,
            "cache_read_input_tokens": 15000,
            "input_cache_creation_5m": 800,
            "input_cache_creation_1h": 200,
        },
        completion_start_time=_iso(T0 + timedelta(milliseconds=1_001)),
        metadata={"stop_reason": "tool_use", "request_id": "req_1"},
    )
    tool = _obs(
        tid,
        "tool:toolu_01",
        root["id"],
        "tool",
        "Bash",
        2_346,
        3_999,
        input={"command": "pytest -x"},
        output="1 failed",
        level="ERROR",
        status_message="exit code 1",
    )
    agent = _obs(
        tid,
        "agent:a1",
        root["id"],
        "agent",
        "Task: explore parser",
        4_000,
        8_000,
        input={"prompt": "find parse()"},
        output="parse() is in parser.py:42",
    )
    gen2 = _obs(
        tid,
        "gen:msg_02",
        agent["id"],
        "generation",
        "claude-haiku-4-5",
        4_100,
        7_900,
        model="claude-haiku-4-5-20251001",
        input="find parse()",
        output="parser.py:42",
        usage_details={"input": 50, "output": 20, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 1000},
    )
    return {
        "v": 1,
        "key": f"turn:{tid}",
        "kind": "turn",
        "queued_at": _iso(T0 + timedelta(seconds=10)),
        "trace": {
            "id": tid,
            "name": "fix the failing test in parser.py",
            "session_id": SESSION,
            "user_id": "alice",
            "tags": ["claude-code", "my-project"],
            "metadata": {
                "cwd": "/home/alice/my-project",
                "git_branch": "main",
                "turn_number": 3,
                "entrypoint": "cli",
                "project": "my-project",
            },
        },
        "observations": [root, gen1, tool, agent, gen2],
    }


def agent_record(turn: dict) -> dict:
    tid = turn["trace"]["id"]
    agent_tool = next(o for o in turn["observations"] if o["type"] == "tool")
    top = _obs(tid, "agent:sub-1", agent_tool["id"], "agent", "subagent general-purpose", 2_400, 3_900, input="look around", output="done")
    gen = _obs(
        tid,
        "gen:msg_sub",
        top["id"],
        "generation",
        "claude-haiku-4-5",
        2_450,
        3_800,
        model="claude-haiku-4-5-20251001",
        usage_details={"input": 5, "output": 6},
    )
    return {
        "v": 1,
        "key": f"agent:{tid}:{top['id']}",
        "kind": "agent",
        "queued_at": turn["queued_at"],
        "trace": copy.deepcopy(turn["trace"]),
        "observations": [top, gen],
    }


@pytest.fixture
def make_sender(langfuse_standin):
    opened: list[Sender] = []

    def make(timeout: float = 5.0) -> Sender:
        sender = Sender(SendSettings(langfuse_standin.public_key, langfuse_standin.secret_key, langfuse_standin.base_url, timeout))
        opened.append(sender)
        return sender

    yield make
    for sender in opened:
        sender.close()


def test_turn_lands_complete_with_record_ids_times_and_fields(langfuse_standin, make_sender):
    record = turn_record()
    delivery = make_sender().send(record)
    assert delivery == Delivery("accepted", 200, delivery.detail)

    stored = {o.id: o for o in langfuse_standin.observations()}
    assert set(stored) == {o["id"] for o in record["observations"]}
    trace = record["trace"]
    for src in record["observations"]:
        got = stored[src["id"]]
        assert got.trace_id == trace["id"]
        assert got.parent_id == src["parent_id"]
        assert got.name == src["name"]
        assert got.type == src["type"]
        start = datetime.fromisoformat(src["start"])
        end = datetime.fromisoformat(src["end"])
        assert (got.start_ns, got.end_ns) == (_ms(start) * 1_000_000, _ms(end) * 1_000_000)
        assert got.input == src["input"] and got.output == src["output"]
        assert got.usage_details == src["usage_details"]
        assert got.model == src["model"]
        assert got.level == src["level"]
        # trace-level fields on every row: Langfuse v4 stores them per observation
        assert got.trace_name == trace["name"]
        assert got.session_id == SESSION and got.user_id == "alice"
        assert got.tags == ["claude-code", "my-project"]
        assert got.trace_metadata == trace["metadata"]
        assert not got.attributes.get("langfuse.internal.as_root")
    root = stored[record["observations"][0]["id"]]
    assert root.is_root and root.attributes.get("langfuse.internal.is_app_root") is True
    assert [o for o in stored.values() if o.attributes.get("langfuse.internal.is_app_root")] == [root]
    assert root.metadata == {"transcript": "/home/alice/.claude/projects/p/s.jsonl"}
    tool = stored[record["observations"][2]["id"]]
    assert tool.level == "ERROR" and tool.status_message == "exit code 1" and tool.span["status_code"] == 2
    gen1 = stored[record["observations"][1]["id"]]
    assert gen1.metadata == {"stop_reason": "tool_use", "request_id": "req_1"}
    assert gen1.completion_start_time.startswith("2026-11-23T20:07:58.124")
    headers = langfuse_standin.trace_requests[0].headers
    assert headers["x-langfuse-ingestion-version"] == "4" and headers["content-encoding"] == "gzip"


def test_resending_changes_nothing_in_langfuse(langfuse_standin, make_sender):
    sender = make_sender()
    record = turn_record()
    assert sender.send(record).outcome == "accepted"
    first = sorted(langfuse_standin.spans, key=lambda s: s["span_id"])
    assert sender.send(copy.deepcopy(record)).outcome == "accepted"
    assert len(langfuse_standin.spans) == 2 * len(first)
    again = sorted(langfuse_standin.spans[len(first) :], key=lambda s: s["span_id"])
    assert again == first  # same ids, times and attributes: Langfuse upserts
    assert len(langfuse_standin.observations()) == len(record["observations"])


def test_agent_record_attaches_to_the_turn_trace_without_becoming_a_root(langfuse_standin, make_sender):
    sender = make_sender()
    turn = turn_record()
    sub = agent_record(turn)
    assert sender.send(turn).outcome == "accepted"
    assert sender.send(sub).outcome == "accepted"
    [trace] = langfuse_standin.traces().values()
    by_id = {o.id: o for o in trace}
    top, gen = by_id[sub["observations"][0]["id"]], by_id[sub["observations"][1]["id"]]
    assert top.parent_id == sub["observations"][0]["parent_id"] and gen.parent_id == top.id
    assert not top.is_root and "langfuse.internal.is_app_root" not in top.attributes
    assert top.trace_name == turn["trace"]["name"] and gen.session_id == SESSION
    roots = [o for o in trace if o.is_root]
    assert [o.id for o in roots] == [turn["observations"][0]["id"]]


def test_event_observations_keep_the_record_time(langfuse_standin, make_sender):
    record = turn_record()
    root_id = record["observations"][0]["id"]
    event = _obs(record["trace"]["id"], "event:u1", root_id, "event", "compact", 5_555, 5_555, input={"trigger": "auto"})
    record["observations"].append(event)
    assert make_sender().send(record).outcome == "accepted"
    got = langfuse_standin.observation(event["id"])
    assert got.type == "event" and got.parent_id == root_id
    assert got.start_ms == got.end_ms == _ms(T0) + 5_555
    assert "langfuse.internal.is_app_root" not in got.attributes


def test_inline_images_stay_in_the_trace_without_side_uploads(langfuse_standin, make_sender, monkeypatch):
    monkeypatch.delenv("LANGFUSE_MEDIA_UPLOAD_ENABLED", raising=False)
    record = turn_record()
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo" + "A" * 2000}}
    record["observations"][1]["input"] = [{"role": "user", "content": [image]}]
    assert make_sender().send(record).outcome == "accepted"
    got = langfuse_standin.observation(record["observations"][1]["id"])
    assert got.input == [{"role": "user", "content": [image]}]
    assert [r.path for r in langfuse_standin.requests if "media" in r.path] == []


def test_long_trace_values_are_kept_not_dropped(langfuse_standin, make_sender):
    record = turn_record()
    record["trace"]["name"] = "x" * 500
    record["trace"]["metadata"]["prompt_excerpt"] = "p" * 300
    assert make_sender().send(record).outcome == "accepted"
    stored = {o.id: o for o in langfuse_standin.observations()}
    root = stored[record["observations"][0]["id"]]
    assert root.metadata["prompt_excerpt"] == "p" * 300
    for obs in stored.values():
        assert len(obs.trace_name) == 200 and obs.trace_name.startswith("xxx")
        assert obs.trace_metadata["cwd"] == "/home/alice/my-project"
        assert "prompt_excerpt" not in obs.trace_metadata


def test_large_turn_is_delivered_completely(langfuse_standin, make_sender):
    # More spans than the SDK batch processor's queue (2048), and a slow server: a
    # sender that only flushed at the end would overflow the queue and lose spans.
    langfuse_standin.delay = 0.2
    record = turn_record()
    tid, root_id = record["trace"]["id"], record["observations"][0]["id"]
    n = 3000
    for i in range(n):
        kind = ("generation", "tool", "event")[i % 3]
        record["observations"].append(
            _obs(
                tid,
                f"{kind}:{i}",
                root_id,
                kind,
                f"{kind}-{i}",
                10 + i,
                10 + i + (0 if kind == "event" else 3),
                input={"i": i},
                output="ok",
                **({"model": "claude-sonnet-4-5-20250929", "usage_details": {"input": i, "output": 1}} if kind == "generation" else {}),
            )
        )
    delivery = make_sender().send(record)
    assert delivery.outcome == "accepted", delivery.detail
    stored = {o.id: o for o in langfuse_standin.observations()}
    assert set(stored) == {o["id"] for o in record["observations"]}
    assert len(langfuse_standin.spans) == len(record["observations"])  # no span sent twice
    assert all(status == 200 for status in langfuse_standin.statuses)
    assert len(langfuse_standin.statuses) >= (n + 5) // 256
    last = record["observations"][-1]
    assert stored[last["id"]].start_ms == _ms(T0) + 10 + n - 1


@pytest.mark.parametrize(
    "script, outcome, status",
    [
        ([401], "auth", 401),
        ([403], "auth", 403),
        ([500], "retry", 500),
        ([503], "retry", 503),
        ([429], "retry", 429),
        ([408], "retry", 408),
        ([400], "dead", 400),
        ([404], "retry", 404),
    ],
)
def test_server_answers_map_to_queue_outcomes(langfuse_standin, make_sender, script, outcome, status):
    sender = make_sender()
    langfuse_standin.script(script)
    started = time.monotonic()
    delivery = sender.send(turn_record())
    elapsed = time.monotonic() - started
    assert (delivery.outcome, delivery.http_status) == (outcome, status)
    assert str(status) in delivery.detail and langfuse_standin.base_url in delivery.detail
    # One request, no SDK retry loop (the OTLP exporter would wait ~3 s on 503/429).
    assert langfuse_standin.statuses == [status]
    assert elapsed < 1.5
    # The same sender delivers once the server is fine again.
    assert sender.send(turn_record()).outcome == "accepted"


def test_wrong_keys_give_auth_and_store_nothing(langfuse_standin):
    sender = Sender(SendSettings(langfuse_standin.public_key, "sk-lf-wrong", langfuse_standin.base_url, 5))
    try:
        delivery = sender.send(turn_record())
    finally:
        sender.close()
    assert (delivery.outcome, delivery.http_status) == ("auth", 401)
    assert "CC_LANGFUSE_SECRET_KEY" in delivery.detail and "sk-lf-wrong" not in delivery.detail
    assert langfuse_standin.observations() == []


def test_hanging_server_gives_retry_within_the_timeout(langfuse_standin, make_sender):
    sender = make_sender(timeout=1.0)
    langfuse_standin.hang()
    started = time.monotonic()
    delivery = sender.send(turn_record())
    elapsed = time.monotonic() - started
    langfuse_standin.release()
    assert (delivery.outcome, delivery.http_status) == ("retry", None)
    assert "within 1 s" in delivery.detail
    assert 0.9 <= elapsed < 3.0
    assert len(langfuse_standin.trace_requests) <= 1


def test_refused_connection_gives_retry_then_recovers(langfuse_standin, make_sender):
    sender = make_sender(timeout=2.0)
    langfuse_standin.stop()
    delivery = sender.send(turn_record())
    assert (delivery.outcome, delivery.http_status) == ("retry", None)
    assert "cannot reach Langfuse" in delivery.detail
    langfuse_standin.start()
    assert sender.send(turn_record()).outcome == "accepted"
    assert len(langfuse_standin.observations()) == 5


def test_body_too_large_is_split_and_delivered(langfuse_standin, make_sender):
    langfuse_standin.script([413])
    delivery = make_sender().send(turn_record())
    assert delivery.outcome == "accepted"
    assert langfuse_standin.statuses[0] == 413 and set(langfuse_standin.statuses[1:]) == {200}
    assert len(langfuse_standin.observations()) == 5


def test_span_too_large_for_the_server_is_dead(langfuse_standin, make_sender):
    langfuse_standin.max_body_bytes = 64  # smaller than any single span
    delivery = make_sender().send(turn_record())
    assert (delivery.outcome, delivery.http_status) == ("dead", 413)
    assert "dead letters" in delivery.detail
    assert langfuse_standin.observations() == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r["trace"].update(id="not-hex"),
        lambda r: r["trace"].update(id="0" * 32),
        lambda r: r["observations"][1].update(id=r["observations"][0]["id"]),
        lambda r: r["observations"][1].update(start="yesterday"),
        lambda r: r["observations"][1].update(type="banana"),
        lambda r: r.update(observations=[]),
        lambda r: [o.update(parent_id=r["observations"][(i + 1) % 5]["id"]) for i, o in enumerate(r["observations"])],
    ],
    ids=["bad-trace-id", "zero-trace-id", "duplicate-id", "bad-time", "bad-type", "empty", "cycle"],
)
def test_malformed_records_are_dead_without_a_request(langfuse_standin, make_sender, mutate):
    record = turn_record()
    mutate(record)
    delivery = make_sender().send(record)
    assert delivery.outcome == "dead" and "malformed" in delivery.detail
    assert langfuse_standin.trace_requests == []


def test_opening_and_sending_print_nothing(langfuse_standin, capfd):
    sender = Sender(SendSettings(langfuse_standin.public_key, langfuse_standin.secret_key, langfuse_standin.base_url, 5))
    try:
        assert sender.send(turn_record()).outcome == "accepted"
        langfuse_standin.script([500])
        assert sender.send(turn_record()).outcome == "retry"
    finally:
        sender.close()
    out, err = capfd.readouterr()
    assert out == ""


@pytest.mark.parametrize("name, value", [("LANGFUSE_TRACING_ENABLED", "false"), ("OTEL_SDK_DISABLED", "true")])
def test_sdk_switched_off_by_environment_keeps_the_record_and_says_why(langfuse_standin, make_sender, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    delivery = make_sender().send(turn_record())
    assert delivery.outcome == "retry" and f"{name}={value}" in delivery.detail
    assert langfuse_standin.trace_requests == []


def test_next_sender_in_the_same_process_uses_its_own_server_and_keys(langfuse_standin, make_sender):
    # The SDK keeps one client per public key per process; a drain round that reopens
    # the sender (maybe after the user fixed the URL or the secret) must not talk to the old one.
    first = make_sender()
    assert first.send(turn_record("p1")).outcome == "accepted"
    first.close()
    with LangfuseStandin(langfuse_standin.public_key, "sk-lf-rotated") as moved:
        second = Sender(SendSettings(moved.public_key, "sk-lf-rotated", moved.base_url, 5))
        try:
            assert second.send(turn_record("p2")).outcome == "accepted"
        finally:
            second.close()
        assert {o.trace_id for o in moved.observations()} == {turn_record("p2")["trace"]["id"]}
    assert {o.trace_id for o in langfuse_standin.observations()} == {turn_record("p1")["trace"]["id"]}


def test_settings_repr_hides_the_secret():
    assert "sk-lf-secret" not in repr(SendSettings("pk-lf-1", "sk-lf-secret", "http://localhost:3050", 10))
