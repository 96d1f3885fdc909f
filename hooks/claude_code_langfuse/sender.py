"""Queue records -> Langfuse through the SDK 5.x. The only module that imports the SDK,
OpenTelemetry and httpx (~0.3 s): only the worker's delivery thread and `drain` load it.

One queue record -> Langfuse observations through the SDK 5.x, using only its supported
extension points: our own TracerProvider whose IdGenerator hands out the record's trace and
span ids (a resend upserts instead of duplicating); observations started with the public
start_observation methods and ended with end(end_time=...); trace attributes on every span via
propagate_attributes; and our own span_exporter, which rebuilds each finished span with the
record's start time (the SDK has no public start time), encodes it with OpenTelemetry's OTLP
encoder and POSTs it once itself, so it knows the HTTP status of every span and the queue, not
the SDK's retry loop, decides what happens next.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import math
import os
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import httpx
from langfuse import Langfuse, propagate_attributes
from langfuse import __version__ as LANGFUSE_SDK_VERSION
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from .config import Settings, display_url
from .plan import IS_APP_ROOT, BadRecord, Plan, PlannedObservation, build_plan

send_log = logging.getLogger("claude_code_langfuse.send")

TRACES_PATH = "/api/public/otel/v1/traces"
ENVIRONMENT_ATTR = "langfuse.environment"
RELEASE_ATTR = "langfuse.release"

# Spans per flush of the SDK batch processor, and so at most per POST. The processor
# silently drops spans beyond its queue (2048 by default); flushing every 256 ended
# spans keeps a 1000+ observation turn far below that.
EXPORT_CHUNK = 256
# POST bodies are split before encoding when the span payload passes this (uncompressed)
# size, so one turn with big tool outputs does not hit proxy or server body limits.
MAX_POST_BYTES = 4 * 1024 * 1024

# The SDK keeps one client per public key per process (a second Langfuse(...) with the
# same key silently reuses the first one's pipeline), so the pipeline is per key too.
_ENGINES: dict[str, _Engine] = {}
_ENGINES_LOCK = threading.Lock()


class SendSettings(NamedTuple):
    public_key: str
    secret_key: str
    base_url: str = "http://localhost:3050"
    timeout: float = 10.0

    def __repr__(self) -> str:  # never print the secret
        return f"SendSettings(public_key={self.public_key!r}, base_url={self.base_url!r}, timeout={self.timeout!r})"


class Delivery(NamedTuple):
    outcome: str  # "accepted" | "auth" | "retry" | "dead"
    http_status: int | None
    detail: str


# --------------------------------------------------------------------------- ids


class _RecordIds(IdGenerator):
    """Gives each new span exactly the id the sender armed for it."""

    def __init__(self) -> None:
        self._trace_id: int | None = None
        self._span_id: int | None = None

    def arm(self, trace_id: str, span_id: str) -> None:
        self._trace_id, self._span_id = int(trace_id, 16), int(span_id, 16)

    def generate_span_id(self) -> int:
        span_id, self._span_id = self._span_id, None
        if span_id is None:
            raise RuntimeError("span created without an armed id (outside Sender.send?)")
        return span_id

    def generate_trace_id(self) -> int:
        if self._trace_id is None:
            raise RuntimeError("trace created without an armed id (outside Sender.send?)")
        return self._trace_id


# --------------------------------------------------------------------------- export


def _server_message(response: httpx.Response) -> str:
    try:
        payload = response.json()
        if isinstance(payload, dict):
            text = payload.get("message") or payload.get("error") or json.dumps(payload)
        else:
            text = json.dumps(payload)
    except ValueError:
        text = response.text
    text = " ".join(str(text).split())
    return text[:200]


def classify(status: int, base: str, message: str = "", retry_after: str = "") -> Delivery:
    """Map an HTTP status to the queue's outcome (docs/design.md, Sender contract)."""
    said = f": {message}" if message else ""
    if 200 <= status < 300:
        return Delivery("accepted", status, f"Langfuse at {base} accepted the spans (HTTP {status})")
    if status in (401, 403):
        why = "refused the keys" if status == 401 else "refused ingestion for these keys"
        return Delivery(
            "auth",
            status,
            f"Langfuse at {base} {why} (HTTP {status}{said}); check that CC_LANGFUSE_PUBLIC_KEY and "
            "CC_LANGFUSE_SECRET_KEY belong to a project on this server. Traces stay queued.",
        )
    if status in (408, 429) or status >= 500:
        wait = f", Retry-After {retry_after}" if retry_after else ""
        return Delivery(
            "retry",
            status,
            f"Langfuse at {base} is unavailable (HTTP {status}{said}{wait}); traces stay queued and are retried later.",
        )
    if status == 404:
        return Delivery(
            "retry",
            status,
            f"Langfuse at {base} has no ingestion endpoint (HTTP 404); check CC_LANGFUSE_BASE_URL points at the "
            "Langfuse web UI address (e.g. http://localhost:3050). Traces stay queued.",
        )
    if 300 <= status < 400:
        return Delivery(
            "retry",
            status,
            f"Langfuse at {base} answered with a redirect (HTTP {status}); check CC_LANGFUSE_BASE_URL "
            "(scheme, host, port). Traces stay queued.",
        )
    return Delivery(
        "dead",
        status,
        f"Langfuse at {base} rejected the data for good (HTTP {status}{said}); "
        "the record goes to the dead letters (see `status`, retry with `drain --retry-dead`).",
    )


def _span_weight(span: ReadableSpan) -> int:
    size = 256
    for value in (span.attributes or {}).values():
        if isinstance(value, str):
            size += len(value)
        elif isinstance(value, (list, tuple)):
            size += sum(len(v) if isinstance(v, str) else 8 for v in value)
        else:
            size += 8
    return size


class _Target:
    """Where and how one Sender POSTs: URL, headers with its keys, its HTTP client."""

    def __init__(self, settings: SendSettings, http: httpx.Client) -> None:
        self.http = http
        self.base = display_url(settings.base_url)
        self.url = settings.base_url.rstrip("/") + TRACES_PATH
        self.timeout = settings.timeout
        token = base64.b64encode(f"{settings.public_key}:{settings.secret_key}".encode()).decode()
        # What the SDK's own exporter sends; a custom span_exporter gets none of it.
        self.headers = {
            "Authorization": f"Basic {token}",
            "Content-Type": "application/x-protobuf",
            "Content-Encoding": "gzip",
            "x-langfuse-sdk-name": "python",
            "x-langfuse-sdk-version": LANGFUSE_SDK_VERSION,
            "x-langfuse-public-key": settings.public_key,
            "x-langfuse-ingestion-version": "4",
            "User-Agent": f"claude-code-langfuse (langfuse-python/{LANGFUSE_SDK_VERSION})",
        }


class _RecordExporter(SpanExporter):
    """Sends the spans of the record being sent; keeps the HTTP outcome per span id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._target: _Target | None = None
        self._times: dict[str, tuple[int, int, bool]] | None = None
        self._trace_fields: dict[str, str] = {}  # langfuse.environment / langfuse.release of the record
        self._accepted: dict[str, int] = {}
        self._failure: Delivery | None = None

    # -- per record
    def begin(self, plan: Plan, target: _Target) -> None:
        with self._lock:
            self._target = target
            self._times = plan.times
            self._trace_fields = {ENVIRONMENT_ATTR: plan.environment, RELEASE_ATTR: plan.release}
            self._accepted = {}
            self._failure = None

    def finish(self) -> tuple[dict[str, int], Delivery | None]:
        with self._lock:
            result = (dict(self._accepted), self._failure)
            self._times = None
            self._target = None
            return result

    @property
    def failed(self) -> bool:
        return self._failure is not None

    # -- SpanExporter
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            times, failure, target, fields = self._times, self._failure, self._target, self._trace_fields
        if times is None or target is None:
            send_log.error("dropped %d span(s) finished outside a send", len(spans))
            return SpanExportResult.FAILURE
        if failure is not None:
            # The record is already lost for this round; don't spend more requests on it.
            return SpanExportResult.FAILURE
        try:
            rebuilt = [self._rebuild(span, times, fields) for span in spans]
            ok = True
            for group in self._groups(rebuilt):
                if not self._post(target, group):
                    ok = False
                    break
        except Exception as exc:  # never let the batch processor swallow our own bug silently
            send_log.exception("exporting spans failed")
            self._fail(Delivery("retry", None, f"could not encode or send spans: {exc!r}; traces stay queued"))
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        pass  # the Sender owns the HTTP client

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    # -- internals
    @staticmethod
    def _rebuild(span: ReadableSpan, times: dict[str, tuple[int, int, bool]], trace_fields: dict[str, str] | None = None) -> ReadableSpan:
        span_id = otel_trace.format_span_id(span.context.span_id)
        planned = times.get(span_id)
        if planned is None:
            send_log.warning("span %s is not part of the record being sent; exported unchanged", span_id)
            return span
        start_ns, end_ns, has_parent = planned
        attributes = dict(span.attributes or {})
        if has_parent:
            # The processor marks spans whose parent it never saw as application roots;
            # a subagent's top span has its parent in another record, not a new root.
            attributes.pop(IS_APP_ROOT, None)
        for name, value in (trace_fields or {}).items():
            # the record's, never what the SDK took from the worker's environment
            # (LANGFUSE_TRACING_ENVIRONMENT, LANGFUSE_RELEASE, GITHUB_SHA, ...)
            if value:
                attributes[name] = value
            else:
                attributes.pop(name, None)
        return ReadableSpan(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=attributes,
            events=span.events,
            links=span.links,
            kind=span.kind,
            status=span.status,
            start_time=start_ns,
            end_time=end_ns,
            instrumentation_scope=span.instrumentation_scope,
        )

    @staticmethod
    def _groups(spans: list[ReadableSpan]) -> list[list[ReadableSpan]]:
        groups: list[list[ReadableSpan]] = []
        current: list[ReadableSpan] = []
        size = 0
        for span in spans:
            weight = _span_weight(span)
            if current and size + weight > MAX_POST_BYTES:
                groups.append(current)
                current, size = [], 0
            current.append(span)
            size += weight
        if current:
            groups.append(current)
        return groups

    def _post(self, target: _Target, spans: list[ReadableSpan]) -> bool:
        body = gzip.compress(encode_spans(spans).SerializeToString(), compresslevel=6, mtime=0)
        try:
            response = target.http.post(target.url, content=body, headers=target.headers)
        except httpx.TimeoutException:
            return self._fail(
                Delivery(
                    "retry",
                    None,
                    f"no answer from Langfuse at {target.base} within {target.timeout:g} s; traces stay queued and are retried later.",
                )
            )
        except httpx.HTTPError as exc:
            return self._fail(
                Delivery(
                    "retry",
                    None,
                    f"cannot reach Langfuse at {target.base} ({type(exc).__name__}: {exc}); is the server running? "
                    "Traces stay queued and are retried later.",
                )
            )
        status = response.status_code
        if status == 413 and len(spans) > 1:
            # Over a proxy's or the server's body limit: halves may fit; one span that
            # does not is dead below.
            half = len(spans) // 2
            return self._post(target, spans[:half]) and self._post(target, spans[half:])
        delivery = classify(status, target.base, "" if status < 300 else _server_message(response), response.headers.get("Retry-After", ""))
        if delivery.outcome != "accepted":
            return self._fail(delivery)
        with self._lock:
            for span in spans:
                self._accepted[otel_trace.format_span_id(span.context.span_id)] = status
        return True

    def _fail(self, delivery: Delivery) -> bool:
        with self._lock:
            if self._failure is None:
                self._failure = delivery
        send_log.debug("send failed: %s", delivery.detail)  # the sender loop logs the one line that matters
        return False


# --------------------------------------------------------------------------- sender


def _resource() -> Resource:
    # Resource.create adds a random service.instance.id per process; Langfuse keeps
    # resource attributes with the observation, so a resend would differ for no reason.
    created = Resource.create({"service.name": "claude-code"})
    stable = {k: v for k, v in created.attributes.items() if k != "service.instance.id"}
    return Resource(stable, created.schema_url)


class _Engine:
    """The SDK client and its OpenTelemetry pipeline for one public key, for the process's life."""

    def __init__(self, settings: SendSettings) -> None:
        self.lock = threading.Lock()  # one record at a time through the pipeline
        self.ids = _RecordIds()
        self.exporter = _RecordExporter()
        self.provider = TracerProvider(
            id_generator=self.ids,
            sampler=ALWAYS_ON,  # an OTEL_TRACES_SAMPLER from the environment must not drop turns
            resource=_resource(),
        )
        self.client = Langfuse(
            public_key=settings.public_key,
            secret_key=settings.secret_key,
            base_url=display_url(settings.base_url).rstrip("/"),
            timeout=max(1, math.ceil(settings.timeout)),
            tracer_provider=self.provider,
            span_exporter=self.exporter,
            flush_at=EXPORT_CHUNK,
            flush_interval=5.0,
            sample_rate=1.0,
            tracing_enabled=True,
        )


def _engine_for(settings: SendSettings) -> _Engine:
    with _ENGINES_LOCK:
        engine = _ENGINES.get(settings.public_key)
        if engine is None:
            engine = _ENGINES[settings.public_key] = _Engine(settings)
        return engine


class Sender:
    """Sends queue records through the Langfuse SDK; see the module docstring.

    Cheap to open again in the same process (e.g. every drain round): the SDK client
    for a public key is created once and reused; URL, keys and timeout come from each
    Sender's own settings, because our exporter does the HTTP itself.
    """

    def __init__(self, settings: SendSettings) -> None:
        if not settings.public_key or not settings.secret_key:
            raise ValueError("Langfuse public and secret keys are required")
        if not settings.base_url.startswith(("http://", "https://")):
            raise ValueError(f"Langfuse base URL must start with http:// or https://: {display_url(settings.base_url)!r}")
        self.settings = settings
        # The SDK would swap base64 images in inputs for media references and upload
        # them on the side (to S3/MinIO); a failed upload loses the image while the
        # trace still counts as accepted. Keep them inline unless the user opted in.
        os.environ.setdefault("LANGFUSE_MEDIA_UPLOAD_ENABLED", "false")
        self._engine = _engine_for(settings)
        self._http = httpx.Client(timeout=httpx.Timeout(settings.timeout))
        self._target = _Target(settings, self._http)
        self._closed = False
        # Both switches turn the SDK (or OpenTelemetry) into a silent no-op.
        self._disabled_by = next(
            (
                f"{name}={os.environ[name]}"
                for name, off in (("LANGFUSE_TRACING_ENABLED", "false"), ("OTEL_SDK_DISABLED", "true"))
                if os.environ.get(name, "").strip().lower() == off
            ),
            "",
        )

    # -- public
    def send(self, record: dict) -> Delivery:
        """Send every observation of one queue record; never raises."""
        try:
            plan = build_plan(record)
        except BadRecord as exc:
            return Delivery("dead", None, f"the queue record is malformed and can never be sent: {exc}")
        except Exception as exc:  # a bug here must not cost the record
            send_log.exception("reading a queue record failed")
            return Delivery("retry", None, f"internal error while reading the record ({exc!r}); it stays queued; see the log")
        if self._closed:
            return Delivery("retry", None, "the sender was closed before this record; it stays queued")
        if self._disabled_by:
            return Delivery(
                "retry",
                None,
                f"{self._disabled_by} is set in the sender's environment, so the Langfuse SDK sends "
                "nothing; unset it (turn tracing off with TRACE_TO_LANGFUSE=false instead). Traces stay queued.",
            )
        engine = self._engine
        with engine.lock:
            engine.exporter.begin(plan, self._target)
            error: BaseException | None = None
            try:
                self._emit(plan)
            except Exception as exc:
                send_log.exception("building spans for trace %s failed", plan.trace_id)
                error = exc
            finally:
                accepted, failure = engine.exporter.finish()
        return self._judge(plan, accepted, failure, error)

    def close(self) -> None:
        """Release this Sender's connections. Every send already flushed its spans; the
        SDK client stays for the next Sender and is shut down by the SDK at exit."""
        if self._closed:
            return
        self._closed = True
        self._http.close()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals
    def _emit(self, plan: Plan) -> None:
        live: list[tuple[Any, PlannedObservation]] = []
        wrappers: dict[str, Any] = {}
        pending = 0

        def ended_one() -> None:
            nonlocal pending
            pending += 1
            if pending >= EXPORT_CHUNK:
                self._engine.client.flush()
                pending = 0

        # A clean context: nothing ambient (e.g. an instrumented caller) may become a parent.
        token = otel_context.attach(otel_context.Context())
        try:
            with propagate_attributes(**plan.trace_attributes):
                try:
                    for obs in plan.order:
                        if self._engine.exporter.failed:
                            break
                        wrapper = self._start(plan, obs, wrappers.get(obs.parent_id or ""))
                        if wrapper.id != obs.id or wrapper.trace_id != plan.trace_id:
                            raise RuntimeError(f"SDK gave span {wrapper.trace_id}/{wrapper.id}, expected {plan.trace_id}/{obs.id}")
                        wrappers[obs.id] = wrapper
                        if obs.type == "event":
                            ended_one()  # the SDK ends events when it creates them
                        else:
                            live.append((wrapper, obs))
                finally:
                    # Children before parents, as a live application would end them; spans
                    # of an already failed record are discarded by the exporter.
                    for wrapper, obs in reversed(live):
                        wrapper.end(end_time=obs.end_ns)
                        ended_one()
                    self._engine.client.flush()
        finally:
            otel_context.detach(token)

    def _start(self, plan: Plan, obs: PlannedObservation, parent: Any) -> Any:
        self._engine.ids.arm(plan.trace_id, obs.id)
        kwargs = dict(obs.kwargs)
        if obs.parent_id is None:
            return self._start_top(obs, kwargs)
        # SDK 5.0.4: an event started from its parent observation ignores that parent
        # (it takes the ambient context), so events always get their parent made current.
        if parent is not None and obs.type != "event":
            return parent.start_observation(name=obs.name, as_type=obs.type, **kwargs)
        # Parent made current by its ids: an event, or a parent in another record (subagent
        # → the turn's Agent tool observation). Not via trace_context=: that marks the span
        # as a trace root and Langfuse would take its input/output as the trace's.
        parent_context = otel_trace.SpanContext(
            trace_id=int(plan.trace_id, 16),
            span_id=int(obs.parent_id, 16),
            is_remote=False,
            trace_flags=otel_trace.TraceFlags(otel_trace.TraceFlags.SAMPLED),
        )
        with otel_trace.use_span(otel_trace.NonRecordingSpan(parent_context)):
            return self._start_top(obs, kwargs)

    def _start_top(self, obs: PlannedObservation, kwargs: dict[str, Any]) -> Any:
        if obs.type == "event":
            return self._engine.client.create_event(name=obs.name, **kwargs)
        return self._engine.client.start_observation(name=obs.name, as_type=obs.type, **kwargs)

    def _judge(
        self,
        plan: Plan,
        accepted: dict[str, int],
        failure: Delivery | None,
        error: BaseException | None,
    ) -> Delivery:
        total = len(plan.order)
        if failure is not None:
            return failure
        if error is not None:
            return Delivery(
                "retry",
                None,
                f"internal error while building spans ({type(error).__name__}: {error}); the record stays queued; see the log",
            )
        missing = [o.id for o in plan.order if o.id not in accepted]
        if missing:
            return Delivery(
                "retry",
                None,
                f"{len(missing)} of {total} spans never reached the exporter (first {missing[0]}); "
                "check LANGFUSE_TRACING_ENABLED / OTEL_SDK_DISABLED / OTEL_BSP_MAX_QUEUE_SIZE in the "
                "sender's environment. The record stays queued.",
            )
        status = max(accepted.values())
        return Delivery("accepted", status, f"{total} observations accepted by Langfuse at {display_url(self.settings.base_url)}")


def open_sender(settings: Settings):
    return Sender(
        SendSettings(
            public_key=settings.public_key,
            secret_key=settings.secret_key,
            base_url=display_url(settings.base_url),
            timeout=settings.timeout,
        )
    )
