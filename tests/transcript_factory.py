"""Writes realistic Claude Code transcript lines for test fixtures.

The shapes follow /work/shared/notes/transcript-format.md (sections 3-9) and the 2.1.280 / 2.0.28 /
1.0.98 samples: one assistant line per content block sharing `message.id`, usage repeated on every
block line (final usage from 2.1.97 on, growing placeholders before), `promptId` / `origin` on 2.1.x
user lines, tool results as `user` lines, `system` markers, 2.1.328 bookkeeping lines, and the three
subagent layouts (inline sidechains, flat `agent-<id>.jsonl`, `<session>/subagents/` + `.meta.json`).

Every line is appended to the file as soon as it is built, so a test can run the hook between any
two lines. Times come from a deterministic clock (far from "now", so a record that used the wall
clock would stand out).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import itertools
import json
import os
import uuid as uuidlib
from typing import Any

MODEL = "claude-opus-5-5"
_counter = itertools.count(1)


def _det_uuid(seed: str) -> str:
    return str(uuidlib.UUID(hashlib.md5(seed.encode()).hexdigest()))


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".") if p.isdigit())


class Clock:
    """Deterministic transcript time: every line is `step_ms` after the previous one."""

    def __init__(self, start: str = "2025-03-04T10:00:00.000Z", step_ms: int = 1000):
        self.t = dt.datetime.fromisoformat(start.replace("Z", "+00:00"))
        self.step = dt.timedelta(milliseconds=step_ms)

    def tick(self, ms: int | None = None) -> str:
        self.t += dt.timedelta(milliseconds=ms) if ms is not None else self.step
        return self.now()

    def now(self) -> str:
        return self.t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.t.microsecond // 1000:03d}Z"


# ---------------------------------------------------------------- content blocks


def text(t: str) -> dict:
    return {"type": "text", "text": t}


def thinking(t: str) -> dict:
    return {"type": "thinking", "thinking": t, "signature": "EqACCkYIBxgCKkD" + hashlib.sha256(t.encode()).hexdigest()}


def tool_use(name: str, input: dict, id: str | None = None) -> dict:
    return {"type": "tool_use", "id": id or f"toolu_{next(_counter):04d}{uuidlib.uuid4().hex[:20]}", "name": name, "input": input}


def image(data: bytes, media_type: str = "image/png") -> dict:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": base64.b64encode(data).decode()}}


def usage(input_tokens: int = 3, output_tokens: int = 50, cache_read: int = 12000, cache_5m: int = 0, cache_1h: int = 400) -> dict:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_5m + cache_1h,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output_tokens,
        "output_tokens_details": {"thinking_tokens": 0},
        "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
        "service_tier": "standard",
        "cache_creation": {"ephemeral_1h_input_tokens": cache_1h, "ephemeral_5m_input_tokens": cache_5m},
    }


# ---------------------------------------------------------------- transcript


class Transcript:
    """One transcript file (main session or subagent) written line by line.

    version "2.1.328" (default) writes the current shapes; "2.0.28" / "1.0.98" write the older ones
    (no promptId/origin, streaming placeholder usage with stop_reason null).
    """

    def __init__(
        self,
        path: str,
        session_id: str | None = None,
        version: str = "2.1.328",
        cwd: str = "/home/dev/proj",
        clock: Clock | None = None,
        agent_id: str = "",
        sidechain: bool = False,
        noise: bool = True,
        entrypoint: str = "cli",
        git_branch: str = "main",
    ):
        self.path = path
        self.session_id = session_id or _det_uuid(path)
        self.version = version
        self.modern = _version_tuple(version) >= (2, 1)
        self.final_usage_every_line = _version_tuple(version) >= (2, 1, 97)
        self.cwd = cwd
        self.clock = clock or Clock()
        self.agent_id = agent_id
        self.sidechain = sidechain
        self.noise_enabled = noise and _version_tuple(version) >= (2, 1, 300)
        self.entrypoint = entrypoint
        self.git_branch = git_branch
        self.last_uuid: str | None = None
        self.prompt_id: str | None = None
        self.rows: list[dict] = []
        self._n = 0
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if not os.path.exists(path):
            open(path, "ab").close()

    # -- low level
    def _uuid(self) -> str:
        self._n += 1
        return _det_uuid(f"{self.path}:{self._n}")

    def envelope(self, type_: str, **fields) -> dict:
        row: dict = {
            "parentUuid": self.last_uuid,
            "isSidechain": self.sidechain,
            "userType": "external",
            "cwd": self.cwd,
            "sessionId": self.session_id,
            "version": self.version,
            "gitBranch": self.git_branch,
        }
        if self.modern:
            row["entrypoint"] = self.entrypoint
        if self.agent_id:
            row["agentId"] = self.agent_id
        row["type"] = type_
        row.update(fields)
        row.setdefault("uuid", self._uuid())
        row.setdefault("timestamp", self.clock.tick())
        return row

    @staticmethod
    def line(row: dict) -> bytes:
        # a lone surrogate becomes its JSON escape (\ud83d), as Claude Code (JSON.stringify) writes it
        return json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "backslashreplace") + b"\n"

    def write(self, row: dict) -> dict:
        with open(self.path, "ab") as f:
            f.write(self.line(row))
        self.rows.append(row)
        if row.get("uuid") and row.get("type") in ("user", "assistant", "system"):
            self.last_uuid = row["uuid"]
        return row

    def raw(self, data: bytes) -> None:
        with open(self.path, "ab") as f:
            f.write(data)

    def size(self) -> int:
        return os.path.getsize(self.path)

    # -- 2.1.328 bookkeeping lines (no uuid on most; must be skipped by any reader)
    def noise(self, big: bool = False) -> None:
        if not self.noise_enabled:
            return
        ts = self.clock.now()
        for kind in ("environment", "model", "deferred_tools_delta", "skill_listing"):
            self.write(
                {
                    "type": "attachment",
                    "attachment": {"type": kind, "content": "x" * 40},
                    "parentUuid": self.last_uuid,
                    "uuid": self._uuid(),
                    "timestamp": ts,
                    "sessionId": self.session_id,
                    "isSidechain": self.sidechain,
                }
            )
        self.write({"type": "atis-latch", "sessionId": self.session_id})
        self.write({"type": "api-request-shape", "shape": {"system": "s" * (20000 if big else 200)}, "sessionId": self.session_id})
        self.write({"type": "api-request", "id": f"req-ref-{self._n}", "params": {"model": MODEL}, "querySource": "repl_main_thread"})

    def end_noise(self) -> None:
        if not self.noise_enabled:
            return
        self.write({"type": "last-prompt", "lastPrompt": "…", "sessionId": self.session_id})
        self.write({"type": "cost-state", "totalCostUSD": 0.01, "modelUsage": {}, "sessionId": self.session_id})

    # -- user lines
    def prompt(self, content: Any, *, prompt_id: str | None = None, origin: str = "human", no_prompt_id: bool = False, **extra) -> dict:
        fields: dict = {"message": {"role": "user", "content": content}}
        if self.modern:
            fields.update(
                origin={"kind": origin}, permissionMode="default", promptSource="typed", turnOrigin="human" if origin == "human" else origin
            )
            if not no_prompt_id:
                self.prompt_id = prompt_id or _det_uuid(f"{self.path}:prompt:{self._n}")
                fields["promptId"] = self.prompt_id
        if self.noise_enabled and not self.sidechain:
            self.write(
                {
                    "type": "queue-operation",
                    "operation": "enqueue",
                    "content": content if isinstance(content, str) else "",
                    "sessionId": self.session_id,
                    "timestamp": self.clock.now(),
                }
            )
        fields.update(extra)
        row = self.write(self.envelope("user", **fields))
        self.noise()
        return row

    def _user(self, content: Any, **extra) -> dict:
        fields: dict = {"message": {"role": "user", "content": content}}
        if self.modern and self.prompt_id:
            fields["promptId"] = self.prompt_id
        fields.update(extra)
        return self.write(self.envelope("user", **fields))

    def tool_results(self, *results: tuple, tool_use_result: Any = None, source_uuid: str | None = None) -> dict:
        """results: (tool_use_id, content) or (tool_use_id, content, is_error)."""
        blocks = []
        for r in results:
            tid, content = r[0], r[1]
            is_error = r[2] if len(r) > 2 else False
            blocks.append({"tool_use_id": tid, "type": "tool_result", "content": content, "is_error": is_error})
        extra: dict = {}
        if tool_use_result is not None:
            extra["toolUseResult"] = tool_use_result
        if self.modern:
            extra["sourceToolAssistantUUID"] = source_uuid or self.last_uuid
        return self._user(blocks, **extra)

    def meta(self, content: Any, **extra) -> dict:
        return self._user(content, isMeta=True, **extra)

    def stop_feedback(self, reason: str) -> dict:
        return self.meta(f"Stop hook feedback:\n{reason}")

    def interrupt(self, for_tool_use: bool = False) -> dict:
        t = "[Request interrupted by user for tool use]" if for_tool_use else "[Request interrupted by user]"
        return self._user([text(t)])

    def slash_command(self, name: str, args: str, expansion: str) -> dict:
        row = self.prompt(
            f"<command-message>{name.lstrip('/')} is running…</command-message>\n<command-name>{name}</command-name>\n"
            f"<command-args>{args}</command-args>"
        )
        self.meta([text(expansion)])
        return row

    def local_command(self, name: str, stdout: str) -> None:
        self.meta(
            "Caveat: The messages below were generated by the user while running local commands. DO NOT respond to these "
            "messages or otherwise consider them in your response unless the user explicitly asks you to."
        )
        self._user(
            f"<command-name>{name}</command-name>\n            <command-message>{name.lstrip('/')}</command-message>\n"
            f"            <command-args></command-args>"
        )
        self._user(f"<local-command-stdout>{stdout}</local-command-stdout>")

    def task_notification(
        self,
        task_id: str,
        summary: str,
        result: str = "done",
        *,
        prompt_id: str | None = None,
        no_prompt_id: bool = False,
        tool_use_id: str = "",
    ) -> dict:
        """2.1.328: a companion isMeta line, then the notification line, both under a new promptId."""
        content = (
            f"<task-notification>\n<task-id>{task_id}</task-id>\n"
            + (f"<tool-use-id>{tool_use_id}</tool-use-id>\n" if tool_use_id else "")
            + f"<status>completed</status>\n<summary>{summary}</summary>\n"
            f"<note>the same task-id may notify more than once.</note>\n<result>{result}</result>\n"
            "<usage><subagent_tokens>19</subagent_tokens><tool_uses>1</tool_uses><duration_ms>1353</duration_ms></usage>\n"
            "</task-notification>"
        )
        if self.modern and not no_prompt_id:
            self.prompt_id = prompt_id or _det_uuid(f"{self.path}:notification:{self._n}")
            self._user(
                "<system-reminder>\n<tools-used-before-summary>Bash</tools-used-before-summary>\n</system-reminder>",
                isMeta=True,
                turnCompanion=True,
            )
        return self.prompt(
            content,
            prompt_id=self.prompt_id if not no_prompt_id else None,
            origin="task-notification",
            no_prompt_id=no_prompt_id,
            promptSource="system",
            turnOrigin="task_notification",
        )

    def compact(self, summary: str = "The conversation so far: the user asked for a web page.", trigger: str = "auto") -> tuple[dict, dict]:
        boundary = self.write(
            self.envelope(
                "system",
                parentUuid=None,
                logicalParentUuid=self.last_uuid,
                subtype="compact_boundary",
                content="Conversation compacted",
                level="info",
                isMeta=False,
                compactMetadata={"trigger": trigger, "preTokens": 160000},
            )
        )
        summary_row = self._user(
            "This session is being continued from a previous conversation that ran out of context. " + summary,
            isCompactSummary=True,
            isVisibleInTranscriptOnly=True,
        )
        return boundary, summary_row

    # -- assistant lines
    def respond(
        self,
        *blocks: dict,
        model: str = MODEL,
        out_tokens: int = 50,
        stop_reason: str | None = None,
        msg_id: str | None = None,
        u: dict | None = None,
    ) -> list[dict]:
        """One API response: one line per block, sharing message.id; returns the lines."""
        mid = msg_id or f"msg_{next(_counter):04d}{uuidlib.uuid4().hex[:20]}"
        req = f"req_{uuidlib.uuid4().hex[:24]}"
        final = u or usage(output_tokens=out_tokens)
        if stop_reason is None:
            stop_reason = "tool_use" if any(b.get("type") == "tool_use" for b in blocks) else "end_turn"
        rows = []
        for i, b in enumerate(blocks):
            last = i == len(blocks) - 1
            if self.final_usage_every_line:
                line_usage, line_stop = final, stop_reason
            else:
                # streaming placeholders: growing output_tokens, stop_reason null (final count on the last line)
                line_usage = dict(final, output_tokens=final["output_tokens"] if last else i + 1)
                line_stop = None
            message = {
                "model": model,
                "id": mid,
                "type": "message",
                "role": "assistant",
                "content": [b],
                "stop_reason": line_stop,
                "stop_sequence": None,
                "usage": line_usage,
            }
            fields: dict = {"message": message, "requestId": req}
            if self.modern:
                fields.update(apiBlockIndex=i, requestRef=f"ref-{mid}", requestedModel=model)
            rows.append(self.write(self.envelope("assistant", **fields)))
        return rows

    def api_error_message(self, error_text: str = "API Error: 529 Overloaded. Please try again later.") -> dict:
        message = {
            "id": _det_uuid(f"{self.path}:synthetic:{self._n}"),
            "model": "<synthetic>",
            "role": "assistant",
            "type": "message",
            "stop_reason": "stop_sequence",
            "stop_sequence": "",
            "content": [text(error_text)],
            "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }
        return self.write(self.envelope("assistant", message=message, isApiErrorMessage=True, error="overloaded"))

    # -- system lines
    def system(self, subtype: str, **fields) -> dict:
        return self.write(self.envelope("system", subtype=subtype, isMeta=False, **fields))

    def api_error_retry(self, attempt: int = 1) -> dict:
        return self.system(
            "api_error",
            level="error",
            error={"status": 529, "error": {"type": "overloaded_error"}},
            retryAttempt=attempt,
            retryInMs=500 * attempt,
            maxRetries=10,
        )

    def stop_hook_summary(self, duration_ms: int = 150, errors: list | None = None) -> dict:
        return self.system(
            "stop_hook_summary",
            hookCount=1,
            hookInfos=[{"command": "python3 hook.py", "durationMs": duration_ms}],
            hookErrors=errors or [],
            hookAdditionalContext=[],
            preventedContinuation=False,
            stopReason="",
            hasOutput=False,
            level="suggestion",
            toolUseID=_det_uuid(f"{self.path}:hook:{self._n}"),
        )

    def turn_duration(self, ms: int = 4321) -> dict:
        return self.system("turn_duration", durationMs=ms, messageCount=len(self.rows))

    # -- whole turns (the common case)
    def simple_turn(self, question: str, answer: str, *, tool: tuple[str, dict, str] | None = None, close: bool = True) -> dict:
        """prompt -> [tool call + result] -> answer -> (2.1.x interactive) stop_hook_summary + turn_duration."""
        p = self.prompt(question)
        if tool:
            name, inp, result = tool
            call = tool_use(name, inp)
            self.respond(text("Let me check."), call)
            self.tool_results((call["id"], result))
        self.respond(text(answer))
        if close and self.modern:
            self.stop_hook_summary()
            self.turn_duration()
            self.end_noise()
        return p

    # -- subagents
    def subagent(
        self, agent_id: str, tool_use_id: str, agent_type: str = "general-purpose", description: str = "Research task"
    ) -> Transcript:
        """2.1.x layout: <session>/subagents/agent-<id>.jsonl plus agent-<id>.meta.json."""
        base = self.path[: -len(".jsonl")]
        sub_dir = os.path.join(base, "subagents")
        os.makedirs(sub_dir, exist_ok=True)
        with open(os.path.join(sub_dir, f"agent-{agent_id}.meta.json"), "w", encoding="utf-8") as f:
            json.dump({"agentType": agent_type, "description": description, "toolUseId": tool_use_id, "spawnDepth": 1, "model": MODEL}, f)
        child = Transcript(
            os.path.join(sub_dir, f"agent-{agent_id}.jsonl"),
            session_id=self.session_id,
            version=self.version,
            cwd=self.cwd,
            clock=self.clock,
            agent_id=agent_id,
            sidechain=True,
            noise=False,
        )
        child.prompt_id = self.prompt_id  # observed: agent lines carry the launching turn's promptId
        return child

    def flat_agent(self, agent_id: str) -> Transcript:
        """2.0.x layout: agent-<8hex>.jsonl next to the session file, parent's sessionId."""
        return Transcript(
            os.path.join(os.path.dirname(self.path), f"agent-{agent_id}.jsonl"),
            session_id=self.session_id,
            version=self.version,
            cwd=self.cwd,
            clock=self.clock,
            agent_id=agent_id,
            sidechain=True,
            noise=False,
        )

    def inline_sidechain(self) -> Transcript:
        """1.0.x layout: isSidechain lines in the session file itself, root parentUuid null, no agentId."""
        side = Transcript(
            self.path, session_id=self.session_id, version=self.version, cwd=self.cwd, clock=self.clock, sidechain=True, noise=False
        )
        side._n = 10_000 + self._n  # distinct uuids in the same file
        return side

    def agent_prompt(self, content: str) -> dict:
        """First line of a subagent transcript (the prompt the parent passed)."""
        return self._user(content)


# ---------------------------------------------------------------- hook events


def stop_event(
    t: Transcript,
    last_assistant_message: str | None = None,
    *,
    prompt_id: str | None = None,
    stop_hook_active: bool = False,
    name: str = "Stop",
) -> dict:
    ev = {
        "session_id": t.session_id,
        "transcript_path": t.path,
        "cwd": t.cwd,
        "permission_mode": "default",
        "effort": {"level": "medium"},
        "hook_event_name": name,
        "stop_hook_active": stop_hook_active,
        "background_tasks": [],
        "session_crons": [],
    }
    pid = prompt_id or t.prompt_id
    if pid:
        ev["prompt_id"] = pid
    if last_assistant_message is not None:
        ev["last_assistant_message"] = last_assistant_message
    return ev


def subagent_stop_event(
    t: Transcript, agent: Transcript, agent_type: str = "general-purpose", last_assistant_message: str | None = None
) -> dict:
    ev = stop_event(t, last_assistant_message, name="SubagentStop")
    ev.update(agent_id=agent.agent_id, agent_type=agent_type, agent_transcript_path=agent.path)
    return ev


def session_end_event(t: Transcript, reason: str = "other") -> dict:
    ev = {"session_id": t.session_id, "transcript_path": t.path, "cwd": t.cwd, "hook_event_name": "SessionEnd", "reason": reason}
    if t.prompt_id:
        ev["prompt_id"] = t.prompt_id
    return ev


def transcript_timestamps(*paths: str) -> set[str]:
    """Every timestamp in the given files, normalised to ms precision (what records may use)."""
    out = set()
    for p in paths:
        with open(p, "rb") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                ts = row.get("timestamp") if isinstance(row, dict) else None
                if isinstance(ts, str):
                    t = dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(dt.UTC)
                    out.add(t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z")
    return out


# ---------------------------------------------------------------- running the hook in this process


def launch_background_agent(session: Transcript, agent_id: str = "a3f9c2d1e4b5a6978") -> tuple[dict, Transcript, dict]:
    """A prompt that starts a background research agent (2.1.328 shapes), the agent's first step a
    WebFetch still running: returns (the Agent call, the agent's transcript, the WebFetch call)."""
    session.prompt("research the API in the background")
    call = tool_use("Agent", {"description": "Research API", "prompt": "Find the rate limits.", "subagent_type": "general-purpose"})
    session.respond(text("Starting a researcher."), call)
    agent = session.subagent(agent_id, call["id"], description="Research API")
    session.tool_results(
        (call["id"], [text(f"Async agent launched successfully.\nagentId: {agent_id}")]),
        tool_use_result={"status": "async_launched", "agentId": agent_id},
    )
    agent.agent_prompt("Find the rate limits.")
    fetch = tool_use("WebFetch", {"url": "https://example.com/limits"})
    agent.respond(text("Fetching docs."), fetch, out_tokens=40)
    return call, agent, fetch


def capturing_logger(name: str, with_level: bool = False):
    """A logger (all levels) whose lines go only into the returned list: "message", or
    "LEVEL message" with_level. Returns (logger, lines)."""
    import logging

    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            lines.append(f"{record.levelname} {record.getMessage()}" if with_level else record.getMessage())

    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(Capture())
    return logger, lines


def hook_process_env(tmp_path, **extra) -> dict:
    """The environment of a hook process as Claude Code would start it, with HOME and the state
    folder under tmp_path and the server URL on a closed port (the worker fails fast, keeps the queue
    and exits: CC_LANGFUSE_RETRY_FOR=0, or it would stay to retry the closed port by itself)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "LANG": "C.UTF-8",
        "CC_LANGFUSE_STATE_DIR": str(tmp_path / "state"),
        "CC_LANGFUSE_BASE_URL": "http://127.0.0.1:9",
        "CC_LANGFUSE_PUBLIC_KEY": "pk-lf-test",
        "CC_LANGFUSE_SECRET_KEY": "sk-lf-test",
        "CC_LANGFUSE_USER_ID": "tester",
        "CC_LANGFUSE_RETRY_FOR": "0",
    }
    env.update(extra)
    return env


def wait_for_worker(state_dir, timeout: float = 30.0) -> None:
    """Wait until the detached worker of `state_dir` is done: no hook event waits in the inbox and
    no worker holds the worker lock (what `status` calls idle)."""
    import fcntl
    import time

    inbox = os.path.join(str(state_dir), "inbox")
    lock = os.path.join(str(state_dir), "locks", "worker.lock")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = [n for n in (os.listdir(inbox) if os.path.isdir(inbox) else []) if n.endswith(".json")]
        busy = False
        if os.path.exists(lock):
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:
                busy = True
            finally:
                os.close(fd)
        if not waiting and not busy:
            return
        time.sleep(0.05)
    raise TimeoutError(f"the worker of {state_dir} did not finish within {timeout}s")


class HookRunner:
    """Runs what the worker does for one hook event (`process_event`) in this process, against a
    private state folder.

    No worker or sender process is started (tests look at the queue it would deliver) and log
    lines are captured in `self.logs` instead of the process-wide log file. By default the event
    is final (the worker's wait for Claude Code's flush is over); `final=False` lets a test see
    the worker hold a Stop whose answer is not on disk yet.
    """

    def __init__(self, state_dir: str, **overrides):
        from claude_code_langfuse import files, store
        from claude_code_langfuse.config import Settings

        self.store = store
        self.settings = Settings(user_id="tester", state_dir=state_dir, base_url="http://127.0.0.1:9", **overrides)
        self.paths = files.Paths(state_dir)
        self.logger, self.logs = capturing_logger(f"cc-langfuse-test-{id(self)}", with_level=True)

    def run(self, event: dict | bytes, final: bool = True) -> list[dict]:
        """One event; returns the records it appended to the queue."""
        from claude_code_langfuse.collect import process_event
        from claude_code_langfuse.event import BadEvent, parse_event

        before = len(self.queue())
        try:
            parsed = parse_event(event if isinstance(event, bytes) else json.dumps(event).encode())
        except BadEvent as e:
            self.logger.error("ignored a hook call: %s", e)
            return []
        self.last_outcome = process_event(parsed, self.settings, self.logger, final=final)
        return self.queue()[before:]

    def queue(self) -> list[dict]:
        return [e.record for e in self.store.queue_read(self.paths.queue) if e.record is not None]

    def latest(self) -> dict[str, dict]:
        """key -> what Langfuse ends up showing after upserts: the queued versions merged the way
        delivery merges them (a later version may hold only the observations that changed)."""
        from claude_code_langfuse.delivery import merge_versions

        versions: dict[str, list[dict]] = {}
        for r in self.queue():
            versions.setdefault(r["key"], []).append(r)
        return {key: merge_versions(v) for key, v in versions.items()}

    def entry(self, t: Transcript) -> dict:
        state = self.store.load_state(self.paths)
        return state["transcripts"].get(self.store.state_key(t.session_id, t.path), {})


def observations(record: dict, type_: str | None = None) -> list[dict]:
    return [o for o in record["observations"] if type_ is None or o["type"] == type_]


def root(record: dict) -> dict:
    r = record["observations"][0]
    assert r["parent_id"] is None
    return r


def children(record: dict, parent_id: str, type_: str | None = None) -> list[dict]:
    return [o for o in record["observations"] if o["parent_id"] == parent_id and (type_ is None or o["type"] == type_)]


# ---------------------------------------------------------------- text typed while Claude works (2.1.328, observed)


def queue_enqueue(t: Transcript, content: str) -> str:
    """The `queue-operation` enqueue line written the moment the user sends text while Claude works;
    returns its time (the time the queued_command attachment carries later)."""
    ts = t.clock.tick()
    t.write({"type": "queue-operation", "operation": "enqueue", "timestamp": ts, "sessionId": t.session_id, "content": content})
    return ts


def queued_command(t: Transcript, prompt: Any, *, typed_at: str | None = None, mode: str = "prompt", origin: str | None = None) -> dict:
    """Text sent while Claude was working, absorbed into the running turn: a `queue-operation`
    remove, then an `attachment` line (type queued_command) stamped with the time it was typed, as
    2.1.328 writes it (same key order; `claude -p --input-format stream-json`, a second message sent
    during a Bash call). `origin` is set by interactive sessions ({"kind": "human"})."""
    typed_at = typed_at or t.clock.now()
    t.write({"type": "queue-operation", "operation": "remove", "timestamp": t.clock.tick(), "sessionId": t.session_id, "content": prompt})
    text_of = prompt if isinstance(prompt, str) else "\n".join(b.get("text", "") for b in prompt if isinstance(b, dict))
    att: dict = {
        "type": "queued_command",
        "prompt": prompt,
        "source_uuid": _det_uuid(f"{t.path}:source:{t._n}"),
        "delivery_id": _det_uuid(f"{t.path}:delivery:{t._n}"),
        "commandMode": mode,
        "timestamp": typed_at,
    }
    if origin:
        att["origin"] = {"kind": origin}
    row = {
        "parentUuid": t.last_uuid,
        "isSidechain": t.sidechain,
        "attachment": att,
        "type": "attachment",
        "uuid": t._uuid(),
        "timestamp": typed_at,
        "rendered": [
            {
                "content": "<system-reminder>\nThe user sent a new message while you were working:\n"
                + text_of
                + "\n\nAddress the message above as you continue this turn.\n</system-reminder>"
            }
        ],
        "renderedRole": "system",
        "userType": "external",
        "entrypoint": t.entrypoint,
        "cwd": t.cwd,
        "sessionId": t.session_id,
        "version": t.version,
        "gitBranch": t.git_branch,
    }
    return t.write(row)
