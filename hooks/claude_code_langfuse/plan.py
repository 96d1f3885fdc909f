"""A queue record -> a send plan: validated, ids checked, observations ordered parents first.

Pure and SDK-free: a record that fails here can never be sent (it goes to dead letters).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any, NamedTuple

# propagate_attributes drops trace-level values longer than this (SDK 5.x).
TRACE_ATTR_MAX = 200

OBSERVATION_TYPES = frozenset({"span", "generation", "tool", "agent", "event", "chain", "retriever", "evaluator", "embedding", "guardrail"})
GENERATION_LIKE = frozenset({"generation", "embedding"})
LEVELS = frozenset({"DEBUG", "DEFAULT", "WARNING", "ERROR"})
IS_APP_ROOT = "langfuse.internal.is_app_root"

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_ENVIRONMENT = re.compile(r"^[a-z0-9_-]{1,40}$")  # and not starting with "langfuse" (Langfuse's rule)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


send_log = logging.getLogger("claude_code_langfuse.send")


class BadRecord(ValueError):
    """The record itself is malformed: no server will ever take it."""


class PlannedObservation(NamedTuple):
    id: str
    parent_id: str | None
    type: str
    name: str
    start_ns: int
    end_ns: int
    kwargs: dict[str, Any]


class Plan(NamedTuple):
    trace_id: str
    order: list[PlannedObservation]  # parents before children
    trace_attributes: dict[str, Any]
    environment: str = ""  # langfuse.environment of every span ("" = Langfuse's "default")
    release: str = ""  # langfuse.release of every span (the Claude Code version of the turn)

    @property
    def times(self) -> dict[str, tuple[int, int, bool]]:
        return {o.id: (o.start_ns, o.end_ns, o.parent_id is not None) for o in self.order}


def _iso_to_datetime(text: Any, what: str) -> datetime:
    if not isinstance(text, str):
        raise BadRecord(f"{what} is not an ISO 8601 string: {text!r}")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadRecord(f"{what} is not an ISO 8601 time: {text!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _ns(moment: datetime) -> int:
    # Integer arithmetic: float seconds would make resends differ by a nanosecond.
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _clip(text: str, limit: int = TRACE_ATTR_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _metadata_value_fits(value: Any) -> bool:
    # Mirrors the SDK: every trace metadata value is JSON-encoded (strings included)
    # before its 200-char check, and longer ones are dropped with only a warning.
    if isinstance(value, str):
        encoded = json.dumps(value, ensure_ascii=False)
    else:
        encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return len(encoded) <= TRACE_ATTR_MAX


def _trace_attributes(trace: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split the record's trace fields into propagate_attributes kwargs and leftovers.

    Leftovers are trace metadata values too long to propagate; they go on the
    top observation(s) instead so nothing is dropped.
    """
    attrs: dict[str, Any] = {}
    if trace.get("name"):
        attrs["trace_name"] = _clip(str(trace["name"]))
    if trace.get("session_id"):
        attrs["session_id"] = _clip(str(trace["session_id"]))
    if trace.get("user_id"):
        attrs["user_id"] = _clip(str(trace["user_id"]))
    tags = [_clip(str(t)) for t in (trace.get("tags") or []) if t not in (None, "")]
    if tags:
        attrs["tags"] = list(dict.fromkeys(tags))
    short: dict[str, Any] = {}
    long: dict[str, Any] = {}
    for key, value in (trace.get("metadata") or {}).items():
        if value is None:
            continue
        (short if _metadata_value_fits(value) else long)[str(key)] = value
    if short:
        attrs["metadata"] = short
    return attrs, long


def build_plan(record: Any) -> Plan:
    """Validate a queue record and order its observations; BadRecord if it can never be sent."""
    if not isinstance(record, dict):
        raise BadRecord("record is not a JSON object")
    trace = record.get("trace")
    if not isinstance(trace, dict):
        raise BadRecord("record has no trace object")
    trace_id = trace.get("id")
    if not isinstance(trace_id, str) or not _HEX32.match(trace_id) or not int(trace_id, 16):
        raise BadRecord(f"trace id must be 32 lowercase hex digits, not all zero: {trace_id!r}")
    raw_observations = record.get("observations")
    if not isinstance(raw_observations, list) or not raw_observations:
        raise BadRecord("record has no observations")

    trace_attrs, long_trace_metadata = _trace_attributes(trace)
    observations: dict[str, PlannedObservation] = {}
    for index, raw in enumerate(raw_observations):
        where = f"observation {index}"
        if not isinstance(raw, dict):
            raise BadRecord(f"{where} is not an object")
        obs_id = raw.get("id")
        if not isinstance(obs_id, str) or not _HEX16.match(obs_id) or not int(obs_id, 16):
            raise BadRecord(f"{where}: id must be 16 lowercase hex digits, not all zero: {obs_id!r}")
        if obs_id in observations:
            raise BadRecord(f"{where}: duplicate observation id {obs_id}")
        parent_id = raw.get("parent_id")
        if parent_id is not None and (not isinstance(parent_id, str) or not _HEX16.match(parent_id) or not int(parent_id, 16)):
            raise BadRecord(f"{where}: parent_id must be null or 16 lowercase hex digits: {parent_id!r}")
        obs_type = raw.get("type") or "span"
        if obs_type not in OBSERVATION_TYPES:
            raise BadRecord(f"{where}: unknown observation type {obs_type!r}")
        start = _iso_to_datetime(raw.get("start"), f"{where}.start")
        end = _iso_to_datetime(raw.get("end") or raw.get("start"), f"{where}.end")
        start_ns, end_ns = _ns(start), _ns(end)
        end_ns = max(end_ns, start_ns)  # a clock step must not make the span invalid

        kwargs: dict[str, Any] = {}
        for key in ("input", "output"):
            if raw.get(key) is not None:
                kwargs[key] = raw[key]
        metadata = raw.get("metadata")
        if metadata is not None:
            kwargs["metadata"] = metadata
        level = raw.get("level")
        if level in LEVELS and level != "DEFAULT":
            kwargs["level"] = level
        elif level not in (None, "DEFAULT"):
            send_log.warning("observation %s: unknown level %r sent as DEFAULT", obs_id, level)
        if raw.get("status_message") is not None:
            kwargs["status_message"] = str(raw["status_message"])
        if obs_type in GENERATION_LIKE:
            if raw.get("model"):
                kwargs["model"] = str(raw["model"])
            if isinstance(raw.get("usage_details"), dict):
                kwargs["usage_details"] = raw["usage_details"]
            if isinstance(raw.get("model_parameters"), dict) and raw["model_parameters"]:
                # langfuse.observation.model.parameters: Langfuse's price tiers select on them (speed == "fast")
                kwargs["model_parameters"] = raw["model_parameters"]
            if raw.get("completion_start_time"):
                kwargs["completion_start_time"] = _iso_to_datetime(raw["completion_start_time"], f"{where}.completion_start_time")
        observations[obs_id] = PlannedObservation(
            id=obs_id,
            parent_id=parent_id,
            type=obs_type,
            name=str(raw.get("name") or obs_type),
            start_ns=start_ns,
            end_ns=end_ns,
            kwargs=kwargs,
        )

    children: dict[str | None, list[PlannedObservation]] = {}
    tops: list[PlannedObservation] = []
    for obs in observations.values():
        if obs.parent_id is None or obs.parent_id not in observations:
            tops.append(obs)  # trace root, or attached to a parent in another record
        else:
            children.setdefault(obs.parent_id, []).append(obs)
    if not tops:
        raise BadRecord("observations form a cycle: none is a root or attached outside the record")

    if long_trace_metadata:
        for top in tops:
            merged = dict(long_trace_metadata)
            if isinstance(top.kwargs.get("metadata"), dict):
                merged.update(top.kwargs["metadata"])
            top.kwargs["metadata"] = merged

    order: list[PlannedObservation] = []
    stack = list(reversed(tops))
    while stack:
        obs = stack.pop()
        order.append(obs)
        stack.extend(reversed(children.get(obs.id, [])))
    if len(order) != len(observations):
        raise BadRecord("observations form a cycle through their parent_id links")
    environment = trace.get("environment") or ""
    if not isinstance(environment, str) or not _ENVIRONMENT.match(environment) or environment.startswith("langfuse"):
        if environment:
            send_log.warning("trace %s: environment %r is not a Langfuse environment name; sent to 'default'", trace_id, environment)
        environment = ""
    release = trace.get("release") or ""
    release = _clip(release) if isinstance(release, str) else ""
    return Plan(trace_id=trace_id, order=order, trace_attributes=trace_attrs, environment=environment, release=release)
