"""A scripted Anthropic Messages API on 127.0.0.1, for driving the real Claude Code CLI offline.

The CLI is pointed at it with ANTHROPIC_BASE_URL. Every request is logged (method, path, headers
without the API key, JSON body, how it was classified, what was answered) so tests can see exactly
what Claude Code asked.

Responses come from a Script:

- ``main``: replies for the main conversation, consumed in order, one per request.
- ``agents``: ``{key: [replies...]}`` for subagent conversations. A request belongs to agent
  ``key`` when the first human text of its conversation (the prompt the Agent tool was called
  with) contains ``key``. Each agent's list is consumed in order; several agents can run at once.
- ``agent_default``: the reply for a subagent request with no (remaining) scripted reply.
- ``side_default``: the reply for side requests (no tools: title/summary/classifier calls).

How requests are told apart (observed with Claude Code 2.1.328, see docs/claude-code-observed.md):
every model call is ``POST /v1/messages?beta=true`` with ``stream: true`` and a ``tools`` list.
A subagent's calls carry the HTTP header ``x-claude-code-agent-id: <agent id>`` and
``cc_is_subagent=true`` in the first system block (the billing header); the main conversation's
calls carry neither. Both carry ``X-Claude-Code-Session-Id`` and the same ``metadata.user_id``, and
both have the Agent tool, so the tools list does not tell them apart. Calls without tools are side
calls (title/summary/classifier; none are made by ``-p`` with nonessential traffic off).
count_tokens has its own path. ``HEAD /api/hello`` is a connectivity probe (answered 200).

A reply that is ``api_error(...)`` is answered with that HTTP status and an Anthropic error body;
it is consumed like any other reply (the CLI's retry then gets the next one).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_MODEL = "claude-sonnet-4-5-20250929"

DEFAULT_USAGE = {
    "input_tokens": 12,
    "output_tokens": 7,
    "cache_read_input_tokens": 0,
    "cache_creation_input_tokens": 0,
    "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
}


# ---- building replies -------------------------------------------------------------------------


def text(value: str) -> dict:
    return {"type": "text", "text": value}


def thinking(value: str, signature: str = "fake-signature") -> dict:
    return {"type": "thinking", "thinking": value, "signature": signature}


def tool_use(name: str, input: dict, id: str | None = None) -> dict:  # noqa: A002 - API field name
    return {"type": "tool_use", "id": id or "toolu_" + uuid.uuid4().hex[:24], "name": name, "input": input}


def usage(input_tokens: int = 12, output_tokens: int = 7, cache_read: int = 0, cache_5m: int = 0, cache_1h: int = 0) -> dict:
    """Usage as the API reports it: cache_creation_input_tokens is the sum of the 5m/1h parts."""
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": cache_5m + cache_1h,
        "cache_creation": {"ephemeral_5m_input_tokens": cache_5m, "ephemeral_1h_input_tokens": cache_1h},
    }


def reply(
    *blocks: dict | str,
    usage: dict | None = None,
    model: str | None = None,  # noqa: A002
    stop_reason: str | None = None,
    message_id: str | None = None,
    delay: float = 0.0,
) -> dict:
    """One assistant response. Strings are text blocks. Several tool_use blocks = parallel tools.

    ``delay`` seconds are slept before answering (to make a subagent outlive its parent turn)."""
    content = [text(b) if isinstance(b, str) else b for b in blocks]
    if stop_reason is None:
        stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn"
    return {
        "kind": "reply",
        "content": content,
        "usage": copy.deepcopy(usage or DEFAULT_USAGE),
        "model": model,
        "stop_reason": stop_reason,
        "message_id": message_id,
        "delay": delay,
    }


def api_error(status: int = 529, error_type: str = "overloaded_error", message: str = "Overloaded") -> dict:
    """One request answered with an HTTP error (529 overloaded, 500 api_error, 400 invalid_request...)."""
    return {"kind": "error", "status": status, "error_type": error_type, "message": message}


@dataclass
class Script:
    main: list = field(default_factory=list)
    agents: dict = field(default_factory=dict)
    agent_default: dict = field(default_factory=lambda: reply("Subagent done."))
    side_default: dict = field(default_factory=lambda: reply("Fake side answer"))
    model: str = DEFAULT_MODEL

    @classmethod
    def of(cls, value: Script | list | None) -> Script:
        if isinstance(value, Script):
            return value
        return cls(main=list(value or []))


# ---- classifying requests ---------------------------------------------------------------------

_REMINDER = re.compile(r"^\s*<system-reminder>.*?</system-reminder>\s*", re.S)


def first_human_text(body: dict) -> str:
    """The first user text of a conversation that is not an injected <system-reminder>."""
    for message in body.get("messages") or []:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for block in blocks:
            if block.get("type") != "text":
                continue
            value = _REMINDER.sub("", block.get("text") or "").strip()
            if value:
                return value
    return ""


def tool_names(body: dict) -> list[str]:
    return [t.get("name") for t in body.get("tools") or [] if isinstance(t, dict)]


def _agent_id(headers: Mapping[str, str] | None) -> str | None:
    for name, value in (headers or {}).items():
        if name.lower() == "x-claude-code-agent-id":
            return value
    return None


def _is_subagent_system(body: dict) -> bool:
    system = body.get("system")
    first = system[0].get("text", "") if isinstance(system, list) and system and isinstance(system[0], dict) else ""
    return "cc_is_subagent=true" in first


# ---- the server -------------------------------------------------------------------------------


class FakeMessagesAPI:
    """Use as a context manager; ``url`` goes into ANTHROPIC_BASE_URL."""

    def __init__(self, script: Script | list | None = None, log_path: str | None = None):
        self.script = Script.of(script)
        self.log_path = log_path
        self.requests: list[dict] = []
        self._main = list(self.script.main)
        self._agents = {k: list(v) for k, v in self.script.agents.items()}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> FakeMessagesAPI:
        api = self

        class Handler(_Handler):
            owner = api

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-messages-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeMessagesAPI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server, "server not started"
        return "http://127.0.0.1:%d" % self._server.server_address[1]

    # inspection
    def requests_of(self, kind: str) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["kind"] == kind]

    def unused(self) -> dict:
        """Scripted replies nobody asked for: {"main": n, "agent:<key>": n} (only non-zero)."""
        with self._lock:
            left = {"main": len(self._main)}
            left.update({"agent:" + k: len(v) for k, v in self._agents.items()})
        return {k: v for k, v in left.items() if v}

    # routing
    def classify(self, method: str, path: str, body: Any, headers: Mapping[str, str] | None = None) -> tuple[str, str | None]:
        """(kind, agent script key): kind is main, agent, side, count_tokens or other."""
        route = path.split("?", 1)[0]
        if route.endswith("/count_tokens"):
            return "count_tokens", None
        if method != "POST" or route != "/v1/messages" or not isinstance(body, dict):
            return "other", None
        if not body.get("tools"):
            return "side", None
        if not (_agent_id(headers) or _is_subagent_system(body)):
            return "main", None
        first = first_human_text(body)
        for key in self._agents:
            if key and key in first:
                return "agent", key
        return "agent", None

    def next_reply(self, kind: str, agent_key: str | None) -> dict | None:
        with self._lock:
            if kind == "main":
                return self._main.pop(0) if self._main else None
            if kind == "agent":
                queue = self._agents.get(agent_key) if agent_key is not None else None
                return queue.pop(0) if queue else copy.deepcopy(self.script.agent_default)
            if kind == "side":
                return copy.deepcopy(self.script.side_default)
        return None

    def record(self, entry: dict) -> None:
        with self._lock:
            entry["n"] = len(self.requests) + 1
            self.requests.append(entry)
            if self.log_path:
                with open(self.log_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry) + "\n")

    def new_message_id(self) -> str:
        return "msg_fake%06d" % next(self._ids)


class _Handler(BaseHTTPRequestHandler):
    owner: FakeMessagesAPI
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet: everything is in owner.requests
        pass

    def do_HEAD(self) -> None:
        self._log_and_answer(None)

    def do_GET(self) -> None:
        self._log_and_answer(None)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self._log_and_answer(body)

    # ---------------------------------------------------------------------------------------
    def _log_and_answer(self, body: Any) -> None:
        api = self.owner
        kind, agent_key = api.classify(self.command, self.path, body, self.headers)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("x-api-key", "authorization")}
        entry = {
            "t": time.time(),
            "method": self.command,
            "path": self.path,
            "kind": kind,
            "agent_key": agent_key,
            "agent_id": _agent_id(self.headers),
            "headers": headers,
            "body": body,
        }
        if kind == "count_tokens":
            entry["answer"] = {"status": 200}
            api.record(entry)
            return self._json(200, {"input_tokens": 100})
        if kind == "other":
            route = self.path.split("?", 1)[0]
            status = 200 if route == "/api/hello" else 404
            entry["answer"] = {"status": status}
            api.record(entry)
            return self._json(status, {} if status == 200 else _error_body("not_found_error", "fake API: no route " + route))
        scripted = api.next_reply(kind, agent_key)
        if scripted is None:
            entry["answer"] = {"status": 400, "exhausted": True}
            api.record(entry)
            return self._json(
                400,
                _error_body(
                    "invalid_request_error",
                    "fake Messages API: the script has no reply left for the %s conversation (request #%d)" % (kind, len(api.requests)),
                ),
            )
        entry["answer"] = {"status": scripted.get("status", 200), "scripted": scripted}
        api.record(entry)
        if scripted["kind"] == "error":
            return self._json(scripted["status"], _error_body(scripted["error_type"], scripted["message"]))
        if scripted.get("delay"):
            time.sleep(scripted["delay"])
        message = self._message(body, scripted)
        if body.get("stream"):
            return self._stream(message)
        return self._json(200, message)

    def _message(self, body: dict, scripted: dict) -> dict:
        return {
            "id": scripted.get("message_id") or self.owner.new_message_id(),
            "type": "message",
            "role": "assistant",
            "model": scripted.get("model") or self.owner.script.model or body.get("model"),
            "content": copy.deepcopy(scripted["content"]),
            "stop_reason": scripted["stop_reason"],
            "stop_sequence": None,
            "usage": self._usage(body, scripted),
        }

    @staticmethod
    def _usage(body: dict, scripted: dict) -> dict:
        """The scripted usage; like the real API, it says the speed a fast-mode request (`speed` in
        the body) was served at, unless the script says otherwise (e.g. a fall back to standard)."""
        out = copy.deepcopy(scripted["usage"])
        if isinstance(body.get("speed"), str) and "speed" not in out:
            out["speed"] = body["speed"]
        return out

    def _json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", "req_fake" + uuid.uuid4().hex[:20])
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _stream(self, message: dict) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("request-id", "req_fake" + uuid.uuid4().hex[:20])
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        final_usage = message["usage"]
        start_usage = dict(final_usage, output_tokens=1)
        start = dict(message, content=[], stop_reason=None, usage=start_usage)
        self._event("message_start", {"type": "message_start", "message": start})
        for index, block in enumerate(message["content"]):
            for name, data in _block_events(index, block):
                self._event(name, data)
        self._event(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None}, "usage": final_usage},
        )
        self._event("message_stop", {"type": "message_stop"})
        self.wfile.flush()

    def _event(self, name: str, data: dict) -> None:
        self.wfile.write(("event: %s\ndata: %s\n\n" % (name, json.dumps(data))).encode())


def _block_events(index: int, block: dict):
    kind = block["type"]
    if kind == "text":
        yield "content_block_start", {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
        yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": block["text"]}}
    elif kind == "thinking":
        yield (
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
        )
        yield (
            "content_block_delta",
            {"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": block["thinking"]}},
        )
        yield (
            "content_block_delta",
            {"type": "content_block_delta", "index": index, "delta": {"type": "signature_delta", "signature": block["signature"]}},
        )
    elif kind == "tool_use":
        yield (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}},
            },
        )
        yield (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])},
            },
        )
    else:
        raise ValueError("fake API cannot stream content block type %r" % kind)
    yield "content_block_stop", {"type": "content_block_stop", "index": index}


def _error_body(error_type: str, message: str) -> dict:
    return {"type": "error", "error": {"type": error_type, "message": message}}
