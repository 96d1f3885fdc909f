"""The stand-in must decode exactly what the real Langfuse SDK sends, and refuse what Langfuse refuses."""

from __future__ import annotations

import base64
import gzip
import json
import secrets
import time

import httpx
import pytest
from langfuse import Langfuse, propagate_attributes
from langfuse_standin import TRACES_PATH, LangfuseStandin
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.trace import TracerProvider


def _client(standin: LangfuseStandin, *, secret_key: str | None = None, **kwargs) -> Langfuse:
    # Own provider: the SDK would otherwise install a process-global one shared by all tests.
    return Langfuse(
        public_key=standin.public_key,
        secret_key=secret_key or standin.secret_key,
        base_url=standin.base_url,
        tracer_provider=TracerProvider(),
        **kwargs,
    )


def _auth(standin: LangfuseStandin, secret: str | None = None) -> str:
    token = f"{standin.public_key}:{secret or standin.secret_key}".encode()
    return "Basic " + base64.b64encode(token).decode()


def _request(trace_id: bytes, span_id: bytes, name: str = "s") -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    scope_spans.scope.name = "manual"
    span = scope_spans.spans.add()
    span.trace_id, span.span_id, span.name = trace_id, span_id, name
    span.start_time_unix_nano, span.end_time_unix_nano = 1_700_000_000_000_000_000, 1_700_000_001_000_000_000
    span.kind = PbSpan.SPAN_KIND_INTERNAL
    attr = span.attributes.add()
    attr.key, attr.value.string_value = "langfuse.observation.type", "tool"
    return request


def _post(
    standin: LangfuseStandin,
    body: bytes,
    *,
    content_type="application/x-protobuf",
    gzipped=False,
    secret: str | None = None,
    timeout: float = 5.0,
) -> httpx.Response:
    headers = {"Authorization": _auth(standin, secret), "Content-Type": content_type}
    if gzipped:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return httpx.post(standin.base_url + TRACES_PATH, content=body, headers=headers, timeout=timeout)


def test_decodes_span_and_generation_sent_by_the_real_sdk(langfuse_standin):
    lf = _client(langfuse_standin)
    try:
        with propagate_attributes(
            trace_name="fix the bug",
            session_id="sess-1",
            user_id="alice",
            tags=["claude-code", "proj"],
            metadata={"cwd": "/tmp/x", "turn_number": 3},
        ):
            root = lf.start_observation(name="turn", as_type="span", input="hello", metadata={"k": "v"})
            gen = root.start_observation(
                name="claude",
                as_type="generation",
                model="claude-sonnet-4-5-20250929",
                input=[{"role": "user", "content": "hi"}],
                output={"text": "yo"},
                usage_details={"input": 12, "output": 34, "cache_read_input_tokens": 5},
                metadata={"stop_reason": "end_turn", "n": 2},
                level="WARNING",
            )
            gen.end()
            root.update(output="bye")
            root.end()
        lf.flush()
    finally:
        lf.shutdown()

    obs = {o.name: o for o in langfuse_standin.observations()}
    assert set(obs) == {"turn", "claude"}
    turn, claude = obs["turn"], obs["claude"]
    assert turn.trace_id == root.trace_id and turn.id == root.id and len(turn.trace_id) == 32
    assert turn.parent_id is None and claude.parent_id == turn.id and claude.trace_id == turn.trace_id
    assert turn.type == "span" and claude.type == "generation"
    assert turn.input == "hello" and turn.output == "bye"
    assert claude.input == [{"role": "user", "content": "hi"}] and claude.output == {"text": "yo"}
    assert claude.usage_details == {"input": 12, "output": 34, "cache_read_input_tokens": 5}
    assert claude.model == "claude-sonnet-4-5-20250929"
    assert claude.level == "WARNING" and turn.level == "DEFAULT"
    assert claude.metadata == {"stop_reason": "end_turn", "n": 2}
    assert turn.metadata == {"k": "v"}
    for o in (turn, claude):
        assert o.trace_name == "fix the bug" and o.session_id == "sess-1" and o.user_id == "alice"
        assert o.tags == ["claude-code", "proj"]
        assert o.trace_metadata == {"cwd": "/tmp/x", "turn_number": 3}
        assert o.span["scope_name"] == "langfuse-sdk"
        assert o.end_ns >= o.start_ns > 0
    request = langfuse_standin.trace_requests[0]
    assert request.status == 200
    assert request.headers["x-langfuse-ingestion-version"] == "4"
    assert request.headers["x-langfuse-public-key"] == langfuse_standin.public_key
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["content-type"] == "application/x-protobuf"


def test_uncompressed_sdk_export_is_decoded_too(langfuse_standin):
    lf = _client(langfuse_standin, otel_compression="none")
    try:
        lf.start_observation(name="plain", as_type="tool", input={"a": 1}).end()
        lf.flush()
    finally:
        lf.shutdown()
    request = langfuse_standin.trace_requests[0]
    assert "content-encoding" not in request.headers
    [obs] = langfuse_standin.observations()
    assert (obs.name, obs.type, obs.input) == ("plain", "tool", {"a": 1})


def test_wrong_secret_key_is_refused_with_401_and_nothing_stored(langfuse_standin):
    lf = _client(langfuse_standin, secret_key="sk-lf-wrong-" + secrets.token_hex(4))
    try:
        lf.start_observation(name="x").end()
        lf.flush()
    finally:
        lf.shutdown()
    assert langfuse_standin.statuses == [401]
    assert langfuse_standin.observations() == []


def test_gzip_and_plain_protobuf_bodies_store_the_same_span(langfuse_standin):
    trace_id, span_id = secrets.token_bytes(16), secrets.token_bytes(8)
    body = _request(trace_id, span_id).SerializeToString()
    assert _post(langfuse_standin, body).status_code == 200
    assert _post(langfuse_standin, body, gzipped=True).status_code == 200
    assert len(langfuse_standin.spans) == 2
    assert langfuse_standin.spans[0] == langfuse_standin.spans[1]
    [obs] = langfuse_standin.observations()  # same ids: one upserted observation
    assert (obs.trace_id, obs.id, obs.type) == (trace_id.hex(), span_id.hex(), "tool")
    assert obs.start_ms == 1_700_000_000_000


def test_otlp_json_with_hex_ids_is_accepted(langfuse_standin):
    payload = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "scope": {"name": "json"},
                        "spans": [
                            {
                                "traceId": "0af7651916cd43dd8448eb211c80319c",
                                "spanId": "b7ad6b7169203331",
                                "name": "j",
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000500000000",
                                "attributes": [{"key": "langfuse.observation.type", "value": {"stringValue": "event"}}],
                            }
                        ],
                    }
                ]
            }
        ]
    }
    response = _post(langfuse_standin, json.dumps(payload).encode(), content_type="application/json")
    assert response.status_code == 200
    [obs] = langfuse_standin.observations()
    assert (obs.trace_id, obs.id, obs.type, obs.end_ms) == (
        "0af7651916cd43dd8448eb211c80319c",
        "b7ad6b7169203331",
        "event",
        1_700_000_000_500,
    )


@pytest.mark.parametrize(
    "body, content_type, gzipped",
    [
        (b"\xff\xff\xff not protobuf", "application/x-protobuf", False),
        (b"{not json", "application/json", False),
        (b"x", "text/plain", False),
    ],
    ids=["bad-protobuf", "bad-json", "bad-content-type"],
)
def test_malformed_bodies_get_400(langfuse_standin, body, content_type, gzipped):
    response = _post(langfuse_standin, body, content_type=content_type, gzipped=gzipped)
    assert response.status_code == 400
    assert "message" in response.json()
    assert langfuse_standin.statuses == [400] and langfuse_standin.spans == []


def test_bad_gzip_gets_400(langfuse_standin):
    headers = {"Authorization": _auth(langfuse_standin), "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    response = httpx.post(langfuse_standin.base_url + TRACES_PATH, content=b"not gzip", headers=headers)
    assert response.status_code == 400


def test_one_span_with_zero_ids_rejects_the_whole_batch(langfuse_standin):
    request = _request(secrets.token_bytes(16), secrets.token_bytes(8), "good")
    bad = request.resource_spans[0].scope_spans[0].spans.add()
    bad.trace_id, bad.span_id, bad.name = b"\x00" * 16, secrets.token_bytes(8), "bad"
    response = _post(langfuse_standin, request.SerializeToString(), gzipped=True)
    assert response.status_code == 400
    assert langfuse_standin.spans == []


def test_health_is_open_and_projects_needs_keys(langfuse_standin):
    langfuse_standin.version = "4.16.0"
    health = httpx.get(langfuse_standin.base_url + "/api/public/health")
    assert health.status_code == 200 and health.json() == {"status": "OK", "version": "4.16.0"}
    url = langfuse_standin.base_url + "/api/public/projects"
    assert httpx.get(url, headers={"Authorization": _auth(langfuse_standin, "nope")}).status_code == 401
    assert httpx.get(url).status_code == 401
    ok = httpx.get(url, headers={"Authorization": _auth(langfuse_standin)})
    assert ok.status_code == 200 and ok.json()["data"][0]["id"]


def test_scripted_responses_are_used_once_each_then_normal(langfuse_standin):
    body = _request(secrets.token_bytes(16), secrets.token_bytes(8)).SerializeToString()
    langfuse_standin.script([401, 500, 413, 200])
    codes = [_post(langfuse_standin, body).status_code for _ in range(5)]
    assert codes == [401, 500, 413, 200, 200]
    assert langfuse_standin.statuses == codes
    assert len(langfuse_standin.spans) == 2  # only the two 200s stored


def test_hang_holds_the_request_until_released(langfuse_standin):
    body = _request(secrets.token_bytes(16), secrets.token_bytes(8)).SerializeToString()
    langfuse_standin.hang()
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        _post(langfuse_standin, body, timeout=0.3)
    assert time.monotonic() - started < 2
    langfuse_standin.release()
    assert _post(langfuse_standin, body).status_code == 200


def test_stop_refuses_connections_and_start_comes_back_on_the_same_port(langfuse_standin):
    body = _request(secrets.token_bytes(16), secrets.token_bytes(8)).SerializeToString()
    port = langfuse_standin.port
    langfuse_standin.stop()
    with pytest.raises(httpx.ConnectError):
        _post(langfuse_standin, body, timeout=1)
    langfuse_standin.start()
    assert langfuse_standin.port == port
    assert _post(langfuse_standin, body).status_code == 200


def test_script_mode_records_spans_with_receive_time(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    record = tmp_path / "spans.jsonl"
    script = Path(__file__).with_name("langfuse_standin.py")
    with LangfuseStandin("pk", "sk") as probe:  # borrow a free port
        port = probe.port
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", str(port), "--public-key", "pk", "--secret-key", "sk", "--record", str(record)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "listening" in proc.stdout.readline()
        standin_view = LangfuseStandin("pk", "sk", port=port)  # only for _post's URL and auth
        before = time.time()
        body = _request(secrets.token_bytes(16), secrets.token_bytes(8), "rec").SerializeToString()
        assert _post(standin_view, body, gzipped=True).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    [line] = record.read_text().splitlines()
    entry = json.loads(line)
    assert entry["name"] == "rec" and before <= entry["received_at"] <= time.time()
    assert (record.stat().st_mode & 0o777) == 0o600
