"""A loopback stand-in for the parts of a Langfuse v4 server the hook talks to.

It speaks the real wire protocol (OTLP/HTTP protobuf or JSON on
``/api/public/otel/v1/traces``, Basic auth, gzip), validates like Langfuse v4
and records what it received, so tests can assert on what Langfuse would store
without Docker. Failure modes (scripted status codes, a hanging server, a
stopped server) can be switched at run time.

Library use::

    standin = LangfuseStandin("pk-lf-x", "sk-lf-y").start()
    ... point a client at standin.base_url ...
    standin.observations()  # deduplicated like Langfuse upserts
    standin.stop()

Script use (benchmarks run by hand)::

    python tests/langfuse_standin.py --port 3050 --public-key pk --secret-key sk --record spans.jsonl
"""

from __future__ import annotations

import argparse
import base64
import binascii
import gzip
import json
import os
import signal
import sys
import threading
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

try:  # the models API (GET/POST /api/public/models) lives beside this file
    from standin_models import MODELS_PATH, ModelsAPI
    from standin_scores import SCORES_PATH, SCORES_V3_PATH, ScoresAPI
except ImportError:  # run as a script from elsewhere
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from standin_models import MODELS_PATH, ModelsAPI
    from standin_scores import SCORES_PATH, SCORES_V3_PATH, ScoresAPI

TRACES_PATH = "/api/public/otel/v1/traces"
HEALTH_PATH = "/api/public/health"
PROJECTS_PATH = "/api/public/projects"
OBSERVATIONS_V2_PATH = "/api/public/v2/observations"
TRACES_API_PATH = "/api/public/traces"
HANG = "hang"


# --------------------------------------------------------------------------- decoding


def _any_value(value: Any) -> Any:
    """Turn an OTLP AnyValue into the Python value the SDK put into the span."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def _attributes(key_values: Iterable[Any]) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in key_values}


def _id_hex(raw: bytes) -> str:
    return raw.hex() if raw else ""


def _valid_id(raw: bytes, size: int) -> bool:
    return len(raw) == size and any(raw)


def _json_ids_to_base64(payload: Any) -> None:
    """OTLP/JSON carries ids as hex; protobuf's JSON mapping expects base64 bytes."""
    for resource_spans in payload.get("resourceSpans", []) or []:
        for scope_spans in resource_spans.get("scopeSpans", []) or []:
            for span in scope_spans.get("spans", []) or []:
                for key in ("traceId", "spanId", "parentSpanId"):
                    text = span.get(key)
                    if isinstance(text, str) and text:
                        try:
                            span[key] = base64.b64encode(bytes.fromhex(text)).decode()
                        except ValueError:
                            pass  # not hex: leave as-is, base64 decoding decides


def decode_request(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    """Decode an OTLP trace export body; raises ValueError when it is not one."""
    request = ExportTraceServiceRequest()
    if "application/x-protobuf" in content_type:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise ValueError(f"invalid protobuf body: {exc}") from exc
        return request
    try:
        payload = json.loads(body)
        _json_ids_to_base64(payload)
        json_format.ParseDict(payload, request)
    except (ValueError, json_format.ParseError, AttributeError, TypeError) as exc:
        raise ValueError(f"invalid JSON body: {exc}") from exc
    return request


def spans_from_request(request: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    """Flatten a request into plain span dicts; ValueError if any span has bad ids."""
    spans: list[dict[str, Any]] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            for span in scope_spans.spans:
                if not _valid_id(span.trace_id, 16) or not _valid_id(span.span_id, 8):
                    raise ValueError(f"span {span.name!r} has a missing or invalid trace/span id")
                if span.parent_span_id and len(span.parent_span_id) != 8:
                    raise ValueError(f"span {span.name!r} has a malformed parent span id")
                spans.append(
                    {
                        "trace_id": _id_hex(span.trace_id),
                        "span_id": _id_hex(span.span_id),
                        "parent_span_id": _id_hex(span.parent_span_id),
                        "name": span.name,
                        "kind": span.kind,
                        "start_ns": span.start_time_unix_nano,
                        "end_ns": span.end_time_unix_nano,
                        "status_code": span.status.code,
                        "status_message": span.status.message,
                        "scope_name": scope.name,
                        "scope_version": scope.version,
                        "scope_attributes": _attributes(scope.attributes),
                        "resource": resource,
                        "attributes": _attributes(span.attributes),
                    }
                )
    return spans


# --------------------------------------------------------------------------- assertions view


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _prefixed_metadata(attributes: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Merge a JSON-object attribute with its ``<prefix>.<key>`` siblings, as Langfuse does."""
    merged: dict[str, Any] = {}
    whole = _maybe_json(attributes.get(prefix))
    if isinstance(whole, dict):
        merged.update(whole)
    elif whole is not None:
        merged["metadata"] = whole
    for key, value in attributes.items():
        if key.startswith(prefix + "."):
            merged[key[len(prefix) + 1 :]] = _maybe_json(value)
    return merged


@dataclass
class Observation:
    """One stored observation: a received span plus the Langfuse view of its attributes."""

    span: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.span[key]

    @property
    def attributes(self) -> dict[str, Any]:
        return self.span["attributes"]

    @property
    def id(self) -> str:
        return self.span["span_id"]

    @property
    def trace_id(self) -> str:
        return self.span["trace_id"]

    @property
    def parent_id(self) -> str | None:
        return self.span["parent_span_id"] or None

    @property
    def name(self) -> str:
        return self.span["name"]

    @property
    def start_ns(self) -> int:
        return self.span["start_ns"]

    @property
    def end_ns(self) -> int:
        return self.span["end_ns"]

    @property
    def start_ms(self) -> int:
        """Langfuse keeps milliseconds."""
        return self.span["start_ns"] // 1_000_000

    @property
    def end_ms(self) -> int:
        return self.span["end_ns"] // 1_000_000

    @property
    def type(self) -> str:
        return self.attributes.get("langfuse.observation.type", "span")

    @property
    def input(self) -> Any:
        return _maybe_json(self.attributes.get("langfuse.observation.input"))

    @property
    def output(self) -> Any:
        return _maybe_json(self.attributes.get("langfuse.observation.output"))

    @property
    def usage_details(self) -> Any:
        return _maybe_json(self.attributes.get("langfuse.observation.usage_details"))

    @property
    def cost_details(self) -> Any:
        return _maybe_json(self.attributes.get("langfuse.observation.cost_details"))

    @property
    def model(self) -> str | None:
        return self.attributes.get("langfuse.observation.model.name")

    @property
    def model_parameters(self) -> Any:
        """langfuse.observation.model.parameters (what Langfuse's price tiers match on), decoded."""
        return _maybe_json(self.attributes.get("langfuse.observation.model.parameters"))

    @property
    def level(self) -> str:
        level = self.attributes.get("langfuse.observation.level")
        if level:
            return level
        return "ERROR" if self.span["status_code"] == 2 else "DEFAULT"

    @property
    def status_message(self) -> str | None:
        return self.attributes.get("langfuse.observation.status_message") or (self.span["status_message"] or None)

    @property
    def completion_start_time(self) -> Any:
        return _maybe_json(self.attributes.get("langfuse.observation.completion_start_time"))

    @property
    def metadata(self) -> dict[str, Any]:
        return _prefixed_metadata(self.attributes, "langfuse.observation.metadata")

    @property
    def trace_metadata(self) -> dict[str, Any]:
        return _prefixed_metadata(self.attributes, "langfuse.trace.metadata")

    @property
    def trace_name(self) -> str | None:
        return self.attributes.get("langfuse.trace.name")

    @property
    def session_id(self) -> str | None:
        return self.attributes.get("session.id") or self.attributes.get("langfuse.session.id")

    @property
    def user_id(self) -> str | None:
        return self.attributes.get("user.id") or self.attributes.get("langfuse.user.id")

    @property
    def tags(self) -> list[str]:
        tags = self.attributes.get("langfuse.trace.tags")
        if tags is None:
            return []
        if isinstance(tags, str):
            decoded = _maybe_json(tags)
            if isinstance(decoded, list):
                return [str(t) for t in decoded]
            return [t.strip() for t in tags.split(",") if t.strip()]
        return list(tags)

    @property
    def environment(self) -> str:
        return self.attributes.get("langfuse.environment") or self.span["resource"].get("langfuse.environment") or "default"

    @property
    def release(self) -> str | None:
        return self.attributes.get("langfuse.release") or self.span["resource"].get("langfuse.release")

    @property
    def is_root(self) -> bool:
        """Langfuse treats a span as the trace root without parent or with as_root."""
        return not self.parent_id or bool(self.attributes.get("langfuse.internal.as_root"))


# --------------------------------------------------------------------------- server


@dataclass
class RequestLog:
    method: str
    path: str
    status: int
    headers: dict[str, str]
    span_count: int = 0
    error: str = ""
    received_at: float = field(default_factory=time.time)


class _Handler(BaseHTTPRequestHandler):
    server_version = "langfuse-standin"
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, keep-alive clients would
    # wait ~40 ms for a delayed ACK on every request, which no real server adds.
    disable_nagle_algorithm = True

    @property
    def standin(self) -> LangfuseStandin:
        return self.server.standin  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass  # keep test output clean; RequestLog has everything

    # -- helpers
    def _send_json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. timed out on a hang)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authorized(self) -> bool:
        return self.standin._check_basic(self.headers.get("Authorization", ""))

    def _log(self, status: int, span_count: int = 0, error: str = "") -> None:
        self.standin._log_request(
            RequestLog(
                method=self.command,
                path=self.path,
                status=status,
                headers={k.lower(): v for k, v in self.headers.items()},
                span_count=span_count,
                error=error,
            )
        )

    # -- routes
    def _serve_models(self, body: bytes | None) -> None:
        if not self._authorized():
            self._log(401, error="unauthorized")
            self._send_json(401, _UNAUTHORIZED)
            return
        api = self.standin.models
        status, payload = api.get(self.path.partition("?")[2]) if body is None else api.post(body)
        self._log(status, error="" if status == 200 else str(payload.get("message", ""))[:200])
        self._send_json(status, payload)

    def _serve_scores(self, body: bytes | None) -> None:
        if not self._authorized():
            self._log(401, error="unauthorized")
            self._send_json(401, _UNAUTHORIZED)
            return
        api = self.standin.scores
        status, payload = api.get(self.path.partition("?")[2]) if body is None else api.post(body)
        self._log(status, error="" if status == 200 else str(payload.get("message", ""))[:200])
        self._send_json(status, payload)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        path = self.path.split("?", 1)[0]
        if path == MODELS_PATH:
            self._serve_models(None)
        elif path == SCORES_V3_PATH:
            self._serve_scores(None)
        elif path == HEALTH_PATH:
            self._log(200)
            self._send_json(200, {"status": "OK", "version": self.standin.version})
        elif path == PROJECTS_PATH:
            if not self._authorized():
                self._log(401, error="unauthorized")
                self._send_json(401, _UNAUTHORIZED)
                return
            self._log(200)
            self._send_json(200, {"data": [self.standin.project]})
        elif path == OBSERVATIONS_V2_PATH:
            if not self._authorized():
                self._log(401, error="unauthorized")
                self._send_json(401, _UNAUTHORIZED)
                return
            self._log(200)
            self._send_json(200, self.standin._observations_page(self.path))
        else:
            self._log(404)
            self._send_json(404, {"message": "Not found"})

    def do_DELETE(self) -> None:  # noqa: N802 - stdlib naming
        """DELETE /api/public/traces/{id} and the bulk DELETE /api/public/traces {"traceIds": [...]}."""
        path = self.path.split("?", 1)[0]
        body = self._read_body()
        if not path.startswith(TRACES_API_PATH):
            self._log(404)
            self._send_json(404, {"message": "Not found"})
            return
        if not self._authorized():
            self._log(401, error="unauthorized")
            self._send_json(401, _UNAUTHORIZED)
            return
        if path == TRACES_API_PATH:
            try:
                ids = json.loads(body or b"{}").get("traceIds")
            except (ValueError, AttributeError):
                ids = None
            if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
                self._log(400, error="bad traceIds")
                self._send_json(400, {"message": "traceIds must be a non-empty list of strings"})
                return
        else:
            ids = [path[len(TRACES_API_PATH) + 1 :]]
        self.standin._delete_traces(ids)
        self._log(200)
        self._send_json(200, {"message": "Traces deleted"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        path = self.path.split("?", 1)[0]
        body = self._read_body()
        if path == MODELS_PATH:
            self._serve_models(body)
            return
        if path == SCORES_PATH:
            self._serve_scores(body)
            return
        if path != TRACES_PATH:
            self._log(404)
            self._send_json(404, {"message": "Not found"})
            return

        if self.standin.delay:
            time.sleep(self.standin.delay)
        scripted = self.standin._next_scripted()
        if scripted == HANG or (scripted is None and self.standin.hanging):
            self.standin._hold()
            if self.standin.stopping:
                self.close_connection = True
                return
            scripted = None  # released: answer normally
        if scripted is not None:
            status, payload = scripted
            self._log(status, error="scripted")
            self._send_json(status, payload)
            return

        status, payload, spans, error = self.standin._ingest(self.headers, body)
        self._log(status, span_count=len(spans), error=error)
        self._send_json(status, payload)


_UNAUTHORIZED = {
    "error": "UnauthorizedError",
    "message": "Invalid credentials. Confirm that you've configured the correct host.",
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _scripted_payload(status: int) -> dict[str, Any]:
    if status in (401, 403):
        return _UNAUTHORIZED if status == 401 else {"error": "Forbidden", "message": "Ingestion suspended"}
    if 200 <= status < 300:
        return {}
    return {"error": "ScriptedError", "message": f"scripted HTTP {status} from the stand-in"}


class LangfuseStandin:
    """In-process Langfuse v4 ingestion endpoint on 127.0.0.1 (see module docstring)."""

    def __init__(
        self,
        public_key: str,
        secret_key: str,
        *,
        port: int = 0,
        version: str = "4.59.2",
        record_path: str | None = None,
        max_body_bytes: int | None = None,
    ) -> None:
        self.public_key = public_key
        self.secret_key = secret_key
        self.port = port
        self.version = version
        self.record_path = record_path
        self.max_body_bytes = max_body_bytes
        self.project = {
            "id": "standin-project",
            "name": "stand-in project",
            "organization": {"id": "standin-org", "name": "stand-in org"},
            "metadata": {},
        }
        self.spans: list[dict[str, Any]] = []
        self.requests: list[RequestLog] = []
        self.hanging = False
        self.stopping = False
        self.delay = 0.0  # seconds before answering each trace POST (a slow server)
        self.models = ModelsAPI()  # GET/POST /api/public/models (tests/standin_models.py)
        self.scores = ScoresAPI()  # POST /api/public/scores, GET /api/public/v3/scores (tests/standin_scores.py)
        self.page_size = 50  # most observations per page of GET /api/public/v2/observations
        self.deleted_traces: list[str] = []  # every trace id a DELETE named, in order
        self._script: list[Any] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> LangfuseStandin:
        if self._server is not None:
            return self
        self.stopping = False
        self._release.clear()
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.standin = self  # type: ignore[attr-defined]
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"langfuse-standin-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (connections are then refused); start() again reuses the port."""
        server = self._server
        if server is None:
            return
        self.stopping = True
        self._release.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> LangfuseStandin:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    # -- failure modes
    def script(self, responses: Iterable[Any]) -> None:
        """Answer the next trace POSTs with these, one each: an int status, (status, body) or 'hang'.

        After the list is used up the stand-in behaves normally again. A 2xx entry
        is answered without storing anything only when it comes with a body;
        a bare 2xx int stores the spans like a normal request.
        """
        items: list[Any] = []
        for item in responses:
            if item == HANG:
                items.append(HANG)
            elif isinstance(item, int):
                items.append(None if 200 <= item < 300 else (item, _scripted_payload(item)))
            else:
                status, payload = item
                items.append((int(status), payload))
        with self._lock:
            self._script = items
        if HANG in items:
            self._release.clear()

    def hang(self) -> None:
        """Accept trace POSTs but never answer until release() or stop()."""
        self._release.clear()
        self.hanging = True

    def release(self) -> None:
        self.hanging = False
        self._release.set()

    def _hold(self) -> None:
        self._release.wait()

    def _next_scripted(self) -> Any:
        with self._lock:
            if self._script:
                return self._script.pop(0)
        return None

    # -- ingestion
    def _ingest(self, headers: Any, body: bytes) -> tuple[int, Any, list[dict[str, Any]], str]:
        handler_auth = headers.get("Authorization", "")
        if not self._check_basic(handler_auth):
            return 401, _UNAUTHORIZED, [], "unauthorized"
        if self.max_body_bytes is not None and len(body) > self.max_body_bytes:
            return 413, {"message": "Request body too large"}, [], "too large (encoded)"
        if "gzip" in (headers.get("Content-Encoding") or "").lower():
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError, zlib.error) as exc:
                return 400, {"message": f"Invalid gzip body: {exc}"}, [], "bad gzip"
        if self.max_body_bytes is not None and len(body) > self.max_body_bytes:
            return 413, {"message": "Request body too large"}, [], "too large (decompressed)"
        version = headers.get("x-langfuse-ingestion-version")
        if version is not None and (not version.isdigit() or int(version) > 4):
            return 400, {"message": f"Unsupported ingestion version {version}"}, [], "bad version"
        content_type = (headers.get("Content-Type") or "").lower()
        if "application/x-protobuf" not in content_type and "application/json" not in content_type:
            return 400, {"message": f"Unsupported content type {content_type!r}"}, [], "bad content type"
        try:
            spans = spans_from_request(decode_request(body, content_type))
        except ValueError as exc:
            return 400, {"message": str(exc)}, [], str(exc)
        received_at = time.time()
        with self._lock:
            self.spans.extend(spans)
            if self.record_path:
                self._append_record(spans, received_at)
        return 200, {}, spans, ""

    def _observations_page(self, raw_path: str) -> dict[str, Any]:
        """GET /api/public/v2/observations, the part the hook uses: sessionId/traceId filters, cursor paging."""
        from urllib.parse import parse_qs, urlsplit

        params = {k: v[-1] for k, v in parse_qs(urlsplit(raw_path).query).items()}
        rows = []
        for obs in sorted(self.observations(), key=lambda o: (o.start_ns, o.id)):
            if params.get("sessionId") and obs.session_id != params["sessionId"]:
                continue
            if params.get("traceId") and obs.trace_id != params["traceId"]:
                continue
            rows.append(
                {
                    "id": obs.id,
                    "traceId": obs.trace_id,
                    "parentObservationId": obs.parent_id,
                    "type": obs.type.upper(),
                    "name": obs.name,
                    "sessionId": obs.session_id,
                    "environment": obs.environment,
                }
            )
        offset = int(params.get("cursor") or 0)
        limit = min(int(params.get("limit") or 50), 1000, self.page_size)
        page = rows[offset : offset + limit]
        more = offset + limit < len(rows)
        return {"data": page, "meta": {"cursor": str(offset + limit) if more else None}}

    def _delete_traces(self, trace_ids: list[str]) -> None:
        gone = set(trace_ids)
        with self._lock:
            self.deleted_traces.extend(trace_ids)
            self.spans[:] = [s for s in self.spans if s["trace_id"] not in gone]

    def _check_basic(self, header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        return decoded == f"{self.public_key}:{self.secret_key}"

    def _append_record(self, spans: list[dict[str, Any]], received_at: float) -> None:
        fd = os.open(self.record_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as handle:
            for span in spans:
                handle.write(json.dumps({"received_at": received_at, **span}, default=str) + "\n")

    def _log_request(self, entry: RequestLog) -> None:
        with self._lock:
            self.requests.append(entry)

    # -- assertions
    @property
    def trace_requests(self) -> list[RequestLog]:
        with self._lock:
            return [r for r in self.requests if r.path.split("?", 1)[0] == TRACES_PATH]

    @property
    def statuses(self) -> list[int]:
        """HTTP status of every trace POST, in order."""
        return [r.status for r in self.trace_requests]

    def observations(self) -> list[Observation]:
        """Spans deduplicated by (trace id, span id), the last one winning, as Langfuse upserts."""
        with self._lock:
            spans = list(self.spans)
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for span in spans:
            latest[(span["trace_id"], span["span_id"])] = span
        return [Observation(span) for span in latest.values()]

    def observation(self, span_id: str) -> Observation:
        matches = [o for o in self.observations() if o.id == span_id]
        if not matches:
            raise KeyError(f"no observation with span id {span_id}")
        return matches[-1]

    def traces(self) -> dict[str, list[Observation]]:
        grouped: dict[str, list[Observation]] = {}
        for obs in self.observations():
            grouped.setdefault(obs.trace_id, []).append(obs)
        return grouped

    def clear(self) -> None:
        with self._lock:
            self.spans.clear()
            self.requests.clear()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Loopback Langfuse v4 ingestion stand-in")
    parser.add_argument("--port", type=int, default=3050)
    parser.add_argument("--public-key", required=True)
    parser.add_argument("--secret-key", required=True)
    parser.add_argument("--record", help="append every received span as one JSON line here")
    parser.add_argument("--version", default="4.59.2", help="version reported by /api/public/health")
    args = parser.parse_args(argv)

    standin = LangfuseStandin(args.public_key, args.secret_key, port=args.port, version=args.version, record_path=args.record)
    standin.start()
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    print(f"Langfuse stand-in listening on {standin.base_url}", flush=True)
    done.wait()
    standin.stop()
    print(f"stopped after {len(standin.spans)} spans in {len(standin.trace_requests)} requests", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
