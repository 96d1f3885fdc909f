"""End to end: the real Claude Code CLI (2.1.328) runs with the project's hook registered, against
the scripted Messages API, and the Langfuse stand-in receives the traces.

What a user would see in Langfuse is asserted against what Claude Code itself wrote: every
expectation (ids, times, texts, usage) is read back from the real transcript, never restated
from the hook's code. Ids follow the contract in docs/design.md (trace id from session id +
promptId, observation ids from the natural ids), so a lost, doubled or mis-parented span shows.

Every CLI run here also checks that the hook never hurt Claude Code (empty hookErrors, no hook
output, the CLI's JSON result intact).
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import json
import os
import pathlib
import secrets
import string
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest
from fake_messages_api import Script, reply, thinking, tool_use, usage
from fixtures_claude_cli import HOOK_EVENTS, hook_command, read_jsonl, run_claude, write_hook_settings
from langfuse_standin import LangfuseStandin, Observation
from transcript_factory import wait_for_worker

pytestmark = pytest.mark.e2e

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
HOOK = REPO_ROOT / "hooks" / "langfuse_hook.py"
PYTHON = sys.executable  # the dev venv: it has the langfuse SDK the detached sender imports
DELIVERY_TIMEOUT_S = 20.0
DEFAULT_MAX_FIELD_CHARS = 100_000
MODEL_A = "claude-sonnet-4-5-20250929"
MODEL_B = "claude-haiku-4-5-20251001"


# ============================================================================ time

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def ts_ms(value: str) -> int:
    """Transcript ISO timestamp -> epoch milliseconds (what Langfuse keeps)."""
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - _EPOCH) // dt.timedelta(milliseconds=1)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


# ============================================================================ ids (docs/design.md)


def trace_id_for(session_id: str, turn_key: str) -> str:
    return hashlib.sha256(f"{session_id}:{turn_key}".encode()).hexdigest()[:32]


def obs_id_for(trace_id: str, kind: str, natural_id: str) -> str:
    return hashlib.sha256(f"{trace_id}:{kind}:{natural_id}".encode()).hexdigest()[:16]


# ============================================================================ reading the transcript


def _content(row: dict):
    message = row.get("message")
    return message.get("content") if isinstance(message, dict) else None


def _blocks(row: dict) -> list[dict]:
    content = _content(row)
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


def _is_tool_result_row(row: dict) -> bool:
    return any(b.get("type") == "tool_result" for b in _blocks(row))


def result_text(block: dict) -> str:
    """A tool_result's content as the text a reader sees (text blocks joined)."""
    content = block.get("content")
    if isinstance(content, list):
        return "\n".join(c.get("text", "") for c in content if isinstance(c, dict) and c.get("type") == "text")
    return content or ""


@dataclass
class TurnView:
    """One prompt of a transcript (or one subagent run), as Claude Code wrote it."""

    prompt_row: dict
    rows: list = field(default_factory=list)  # every row of the turn with a timestamp, prompt included

    @property
    def prompt_id(self) -> str:
        return self.prompt_row.get("promptId") or self.prompt_row["uuid"]

    @property
    def prompt(self) -> str:
        return "\n".join(b.get("text", "") for b in _blocks(self.prompt_row) if b.get("type") == "text")

    @property
    def timestamps(self) -> set[int]:
        return {ts_ms(r["timestamp"]) for r in self.rows if r.get("timestamp")}

    def messages(self) -> collections.OrderedDict[str, list[dict]]:
        """API responses: message.id -> its assistant lines (one per content block), file order."""
        out: collections.OrderedDict[str, list[dict]] = collections.OrderedDict()
        for row in self.rows:
            if row.get("type") == "assistant":
                out.setdefault(row["message"]["id"], []).append(row)
        return out

    def tool_uses(self) -> dict[str, tuple[dict, dict]]:
        return {
            b["id"]: (row, b) for row in self.rows if row.get("type") == "assistant" for b in _blocks(row) if b.get("type") == "tool_use"
        }

    def tool_results(self) -> dict[str, tuple[dict, dict]]:
        return {
            b["tool_use_id"]: (row, b)
            for row in self.rows
            if row.get("type") == "user"
            for b in _blocks(row)
            if b.get("type") == "tool_result"
        }

    def tool_result_order(self) -> list[str]:
        return [b["tool_use_id"] for row in self.rows if row.get("type") == "user" for b in _blocks(row) if b.get("type") == "tool_result"]

    def final_text(self) -> str:
        texts = [
            b["text"]
            for row in self.rows
            if row.get("type") == "assistant"
            for b in _blocks(row)
            if b.get("type") == "text" and b.get("text")
        ]
        return texts[-1] if texts else ""


def main_turns(lines: list[dict]) -> list[TurnView]:
    """The main conversation's prompts (human and task-notification), with their rows.

    A meta row written just before a prompt with that prompt's promptId (``turnCompanion``,
    e.g. the <tools-used-before-summary> reminder of a task-notification turn) belongs to
    the coming turn, not to the one before it."""
    turns: list[TurnView] = []
    ahead: list[dict] = []  # companion rows of a turn whose prompt row is not there yet
    for row in lines:
        if row.get("isSidechain") or row.get("type") not in ("user", "assistant", "system", "attachment", "api-request"):
            continue
        current = turns[-1].prompt_id if turns else None
        if row.get("type") == "user" and row.get("isMeta") and row.get("promptId") and row.get("promptId") != current:
            ahead.append(row)
            continue
        is_prompt = row.get("type") == "user" and not row.get("isMeta") and not _is_tool_result_row(row) and row.get("promptId") != current
        if is_prompt:
            turns.append(TurnView(row, ahead + [row]))
            ahead = []
        elif turns:
            turns[-1].rows.append(row)
    if turns and ahead:
        turns[-1].rows.extend(ahead)
    return turns


def agent_turn(path: pathlib.Path) -> TurnView:
    rows = [r for r in read_jsonl(path) if r.get("type") in ("user", "assistant", "system", "attachment", "api-request")]
    first = next(r for r in rows if r.get("type") == "user")
    return TurnView(first, rows)


# ============================================================================ a traced Claude Code home


class Traced:
    """A HOME with the project's hook registered for Stop/SubagentStop/SessionEnd, sending to a stand-in."""

    def __init__(self, root: pathlib.Path, standin: LangfuseStandin):
        self.root = root
        self.standin = standin
        self.home = root / "home"
        (self.home / ".claude").mkdir(parents=True)
        # A distinctive folder name: the trace tags must carry it.
        self.project_name = "e2e-proj-" + secrets.token_hex(3)
        self.project = root / self.project_name
        self.project.mkdir()
        self.state = self.home / ".claude" / "state"
        self.user_id = "e2e-user-" + secrets.token_hex(3)
        self.env = {
            "CC_LANGFUSE_BASE_URL": standin.base_url,
            "CC_LANGFUSE_PUBLIC_KEY": standin.public_key,
            "CC_LANGFUSE_SECRET_KEY": standin.secret_key,
            "CC_LANGFUSE_USER_ID": self.user_id,
        }
        self.command = hook_command(PYTHON, "-I", HOOK)  # as the installer registers it: a script path, isolated
        write_hook_settings(self.home, {event: [self.command] for event in HOOK_EVENTS})
        self.runs: list = []

    # -- Claude Code
    def run(self, prompt: str, script, resume: str | None = None, expect_result: str | None = None, **kw):
        """One `claude -p` run; also checks the hook did not disturb Claude Code."""
        started = wall_ms()
        run = run_claude(self.home, self.project, prompt, script, resume=resume, env=self.env, **kw)
        run.wall = (started, wall_ms())
        self.runs.append(run)
        if expect_result is not None:
            assert run.result.get("result") == expect_result, "the CLI's JSON result changed: %r" % run.result
        assert run.api.unused() == {}, "scripted replies left over: %s" % run.api.unused()
        self.check_hook_was_harmless(run)
        return run

    def check_hook_was_harmless(self, run) -> None:
        summaries = [d for d in run.lines() if d.get("type") == "system" and d.get("subtype") == "stop_hook_summary"]
        assert summaries, "no stop_hook_summary line: did the Stop hook run at all?"
        for s in summaries:
            assert s["hookErrors"] == [], "the hook reported errors to Claude Code: %r" % s["hookErrors"]
            assert s["hasOutput"] is False, "the hook printed something Claude Code read: %r" % s
            assert s["preventedContinuation"] is False and s.get("stopReason", "") == ""
            assert [i["command"] for i in s["hookInfos"]] == [self.command]

    # -- the hook's own command line
    def hook_env(self) -> dict:
        env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL") if k in os.environ}
        env["HOME"] = str(self.home)
        env.update(self.env)
        return env

    def hook_cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [PYTHON, "-I", str(HOOK), *args], env=self.hook_env(), capture_output=True, text=True, timeout=120, cwd=str(self.project)
        )
        if check:
            assert proc.returncode == 0, "%s %s failed (%s)\nstdout:\n%s\nstderr:\n%s\nlog:\n%s" % (
                HOOK.name,
                " ".join(args),
                proc.returncode,
                proc.stdout,
                proc.stderr,
                self.log_tail(),
            )
        return proc

    def status(self) -> dict:
        return json.loads(self.hook_cli("status", "--json").stdout)

    # -- state folder
    @property
    def queue_path(self) -> pathlib.Path:
        return self.state / "pending_traces.jsonl"

    def queue_records(self) -> list[dict]:
        try:
            raw = self.queue_path.read_bytes()
        except FileNotFoundError:
            return []
        records = []
        for line in raw.splitlines():
            if line.strip():
                try:
                    record = json.loads(line)
                except ValueError:
                    record = {"key": "(a line being written)"}  # still pending, whatever it becomes
                if isinstance(record, dict) and "key" in record:
                    records.append(record)
        return records

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.state / "langfuse_hook.log").read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def inbox(self) -> list[str]:
        """Hook events the worker has not read yet."""
        try:
            return [n for n in os.listdir(self.state / "inbox") if n.endswith(".json")]
        except FileNotFoundError:
            return []

    def wait_worker(self) -> None:
        """Wait until the detached worker has read every event and exited (sending included)."""
        wait_for_worker(self.state, timeout=DELIVERY_TIMEOUT_S)

    def wait_delivered(self, predicate=None, timeout: float = DELIVERY_TIMEOUT_S) -> None:
        """Wait for the detached worker: every event read, the queue empty (a record leaves it only once accepted)."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.inbox() and not self.queue_records() and (predicate is None or predicate()):
                return
            if time.monotonic() > deadline:
                roots = {o.trace_id: o.output for o in self.standin.observations() if o.parent_id is None}
                pytest.fail(
                    "not there within %.0f s: %d record(s) still queued, stand-in statuses %s, %d span(s) "
                    "received; traces received (id -> root output): %s\nlog:\n%s"
                    % (
                        timeout,
                        len(self.queue_records()),
                        self.standin.statuses,
                        len(self.standin.spans),
                        json.dumps(roots)[:2000],
                        self.log_tail(),
                    )
                )
            time.sleep(0.1)

    def drain_and_check(self, clean_log: bool = True) -> str:
        """`drain` with the same HOME/env: nothing left, and `status --json` shows no problem.

        ``clean_log``: also no warning or error in the hook's log (False where the test caused one)."""
        out = self.hook_cli("drain").stdout
        assert self.queue_records() == []
        st = self.status()
        assert st["queue_records"] == 0 and st["queue_turns"] == 0, st
        assert st["last_error"] is None, st["last_error"]
        if clean_log:
            assert not st["last_log_problem"], st["last_log_problem"]
        assert st["dead_letters"] == 0 and st["queue_corrupt_lines"] == 0, st
        assert not (self.state / "dead_traces.jsonl").exists() or not (self.state / "dead_traces.jsonl").read_bytes().strip()
        return out

    # -- what Langfuse holds
    def trace(self, trace_id: str) -> dict[str, Observation]:
        return {o.id: o for o in self.standin.traces().get(trace_id, [])}

    def roots_with_output(self, expected: dict[str, str]) -> bool:
        """Every expected trace id has a root whose output is the expected final answer."""
        traces = self.standin.traces()
        for trace_id, answer in expected.items():
            roots = [o for o in traces.get(trace_id, []) if o.parent_id is None]
            if len(roots) != 1 or roots[0].output != answer:
                return False
        return True


def new_standin() -> LangfuseStandin:
    # Fresh keys per stand-in: the SDK keeps one client per public key per process.
    token = secrets.token_hex(8)
    return LangfuseStandin(f"pk-lf-e2e-{token}", f"sk-lf-e2e-{token}")


@pytest.fixture
def traced(claude_cli, tmp_path, langfuse_standin) -> Traced:
    return Traced(tmp_path, langfuse_standin)


# ============================================================================ shared assertions


def generation_texts(obs: Observation) -> list[tuple[str, str]]:
    """(type, text) of the text and thinking blocks in a generation's output."""
    out = obs.output
    content = out.get("content") if isinstance(out, dict) else out
    found = []
    for block in content or []:
        if isinstance(block, dict) and block.get("type") in ("text", "thinking"):
            found.append((block["type"], block.get("text") if block["type"] == "text" else block.get("thinking")))
    return found


def usage_matches(got: dict, u: dict) -> bool:
    """Langfuse usage_details vs the API usage Claude Code stored (docs/design.md key names).

    The cache-write split into 5m/1h must be kept whenever the API reported one (the two are
    priced differently); with no cache writes either form of zero is fine."""
    common = {"input": u["input_tokens"], "output": u["output_tokens"], "cache_read_input_tokens": u["cache_read_input_tokens"]}
    split = {
        "input_cache_creation_5m": u["cache_creation"]["ephemeral_5m_input_tokens"],
        "input_cache_creation_1h": u["cache_creation"]["ephemeral_1h_input_tokens"],
    }
    if any(split.values()):
        return got == {**common, **split}
    return got in ({**common, **split}, {**common, "cache_creation_input_tokens": u["cache_creation_input_tokens"]})


def assert_generations_match(
    turn: TurnView, got: dict[str, Observation], trace_id: str, parent_id: str, scripted: dict[str, tuple[str, dict]] | None = None
) -> None:
    """One generation per API message, with model, usage, every text/thinking block and exact times.

    ``scripted``: message id -> (model, usage dict as scripted), when the test knows it."""
    stamps = turn.timestamps
    for message_id, rows in turn.messages().items():
        gid = obs_id_for(trace_id, "gen", message_id)
        assert gid in got, "no generation for API message %s" % message_id
        gen = got[gid]
        assert gen.type == "generation"
        assert gen.parent_id == parent_id
        assert gen.model == rows[-1]["message"]["model"]
        assert usage_matches(gen.usage_details, rows[-1]["message"]["usage"]), (gen.usage_details, rows[-1]["message"]["usage"])
        if scripted:
            model, scripted_usage = scripted[message_id]
            assert gen.model == model
            assert gen.usage_details == {
                "input": scripted_usage["input_tokens"],
                "output": scripted_usage["output_tokens"],
                "cache_read_input_tokens": scripted_usage["cache_read_input_tokens"],
                "input_cache_creation_5m": scripted_usage["cache_creation"]["ephemeral_5m_input_tokens"],
                "input_cache_creation_1h": scripted_usage["cache_creation"]["ephemeral_1h_input_tokens"],
            }
        blocks = [b for r in rows for b in _blocks(r) if b.get("type") in ("text", "thinking")]
        texts = generation_texts(gen)
        for b in blocks:
            value = b.get("text") if b["type"] == "text" else b.get("thinking")
            assert (b["type"], value) in texts, "%s block %r missing from generation %s" % (b["type"], value, message_id)
        # Ends when its last block was written; starts at a transcript moment no later than its first block.
        assert gen.end_ms == ts_ms(rows[-1]["timestamp"])
        assert gen.start_ms in stamps
        # 2.1.x writes an api-request line when the request goes out: that is the generation's start
        request = [r for r in turn.rows if r.get("type") == "api-request" and r.get("id") == rows[0].get("requestRef")]
        if request:
            assert gen.start_ms == ts_ms(request[0]["timestamp"])
        assert ts_ms(turn.prompt_row["timestamp"]) <= gen.start_ms <= ts_ms(rows[0]["timestamp"])


def assert_tool_times(turn: TurnView, tool: Observation, tool_use_id: str) -> None:
    use_row, _ = turn.tool_uses()[tool_use_id]
    result_row, _ = turn.tool_results()[tool_use_id]
    assert tool.start_ms == ts_ms(use_row["timestamp"])
    assert tool.end_ms == ts_ms(result_row["timestamp"])


def assert_root_matches(turn: TurnView, root: Observation, answer: str) -> None:
    assert root.parent_id is None and root.is_root
    assert root.input == turn.prompt
    assert root.output == answer
    assert root.start_ms == ts_ms(turn.prompt_row["timestamp"])
    last_answer = max(ts_ms(r["timestamp"]) for r in turn.rows if r.get("type") == "assistant")
    assert root.end_ms in turn.timestamps and root.end_ms >= last_answer


def assert_within(run, observations) -> None:
    low, high = run.wall
    for o in observations:
        assert low <= o.start_ms <= o.end_ms <= high, "%s %s [%d, %d] outside the run [%d, %d]" % (
            o.type,
            o.name,
            o.start_ms,
            o.end_ms,
            low,
            high,
        )


def closing_figures(standin: LangfuseStandin, trace_ids: list[str]) -> dict:
    """Turns, observations by type and total usage as Langfuse holds them, for the report."""
    by_type: collections.Counter = collections.Counter()
    totals: collections.Counter = collections.Counter()
    traces = standin.traces()
    for tid in trace_ids:
        for o in traces.get(tid, []):
            by_type[o.type] += 1
            for key, value in (o.usage_details or {}).items():
                totals[key] += value
    return {"turns": len(trace_ids), "observations": dict(sorted(by_type.items())), "usage": dict(sorted(totals.items()))}


# ============================================================================ 1. text turn, then a Bash turn

PROMPT_1 = "Summarise the release plan in one line\nThe plan: freeze on Monday, ship on Thursday.\nBe brief."
ANSWER_1 = "Freeze Monday, ship Thursday."
PROMPT_2 = "Run echo hi for me"
THOUGHT_2 = "The user wants me to run echo hi in Bash."
PRE_TOOL_2 = "Running it."
ANSWER_2 = "It printed hi."
USAGE_1 = usage(101, 21, cache_read=51, cache_5m=31, cache_1h=11)
USAGE_2A = usage(202, 32, cache_read=62, cache_5m=42, cache_1h=12)
USAGE_2B = usage(303, 43, cache_read=73, cache_5m=53, cache_1h=13)


@pytest.fixture(scope="module")
def two_turns(claude_cli, tmp_path_factory):
    """One session: a text-only turn, then (--resume) a Bash turn with thinking. Delivered and drained."""
    standin = new_standin().start()
    try:
        t = Traced(tmp_path_factory.mktemp("two-turns"), standin)
        first = t.run(PROMPT_1, [reply(ANSWER_1, usage=USAGE_1, model=MODEL_A)], expect_result=ANSWER_1)
        second = t.run(
            PROMPT_2,
            [
                reply(
                    thinking(THOUGHT_2, "sig-e2e"),
                    PRE_TOOL_2,
                    tool_use("Bash", {"command": "echo hi", "description": "Print hi"}, id="toolu_e2e_echo"),
                    usage=USAGE_2A,
                    model=MODEL_B,
                ),
                reply(ANSWER_2, usage=USAGE_2B, model=MODEL_A),
            ],
            resume=first.session_id,
            expect_result=ANSWER_2,
        )
        assert second.session_id == first.session_id
        turns = main_turns(second.lines())
        assert [tv.prompt for tv in turns] == [PROMPT_1, PROMPT_2]
        ids = [trace_id_for(first.session_id, tv.prompt_id) for tv in turns]
        t.wait_delivered(lambda: t.roots_with_output({ids[0]: ANSWER_1, ids[1]: ANSWER_2}))
        drained = t.drain_and_check()
        yield t, first, second, turns, ids, drained
    finally:
        standin.stop()


def test_one_trace_per_turn_with_session_user_tags_and_name(two_turns):
    t, first, _second, turns, ids, drained = two_turns
    traces = t.standin.traces()
    assert sorted(traces) == sorted(ids) and ids[0] != ids[1]
    assert "0 sent" in drained  # the detached sender had delivered everything already
    for tv, tid in zip(turns, ids, strict=True):
        observations = traces[tid]
        for o in observations:
            assert o.session_id == first.session_id, "span %s lacks the session id" % o.name
            assert o.user_id == t.user_id
            assert "claude-code" in o.tags and t.project_name in o.tags
        (root,) = [o for o in observations if o.parent_id is None]
        assert root.trace_name == tv.prompt.splitlines()[0]
    figures = closing_figures(t.standin, ids)
    print("\nCLOSING FIGURES (two-turn session):", json.dumps(figures))
    scripted = (USAGE_1, USAGE_2A, USAGE_2B)
    assert figures["observations"] == {"generation": 3, "span": 2, "tool": 1}
    assert figures["usage"] == {  # nothing counted twice, nothing missing
        "input": sum(u["input_tokens"] for u in scripted),
        "output": sum(u["output_tokens"] for u in scripted),
        "cache_read_input_tokens": sum(u["cache_read_input_tokens"] for u in scripted),
        "input_cache_creation_5m": sum(u["cache_creation"]["ephemeral_5m_input_tokens"] for u in scripted),
        "input_cache_creation_1h": sum(u["cache_creation"]["ephemeral_1h_input_tokens"] for u in scripted),
    }


def test_text_turn_root_and_generation(two_turns):
    t, first, _second, turns, ids, _ = two_turns
    tv, tid = turns[0], ids[0]
    got = t.trace(tid)
    root = got[obs_id_for(tid, "root", tv.prompt_id)]
    assert_root_matches(tv, root, ANSWER_1)
    assert root.trace_name == "Summarise the release plan in one line"
    (message_id,) = tv.messages()
    assert_generations_match(tv, got, tid, root.id, {message_id: (MODEL_A, USAGE_1)})
    assert sorted(o.type for o in got.values()) == ["generation", "span"]
    assert_within(first, got.values())


def test_bash_turn_generations_thinking_tool_and_times(two_turns):
    t, _first, second, turns, ids, _ = two_turns
    tv, tid = turns[1], ids[1]
    got = t.trace(tid)
    root = got[obs_id_for(tid, "root", tv.prompt_id)]
    assert_root_matches(tv, root, ANSWER_2)
    message_ids = list(tv.messages())
    assert len(message_ids) == 2
    assert_generations_match(tv, got, tid, root.id, {message_ids[0]: (MODEL_B, USAGE_2A), message_ids[1]: (MODEL_A, USAGE_2B)})
    first_gen = got[obs_id_for(tid, "gen", message_ids[0])]
    assert ("thinking", THOUGHT_2) in generation_texts(first_gen)
    assert ("text", PRE_TOOL_2) in generation_texts(first_gen)

    tool = got[obs_id_for(tid, "tool", "toolu_e2e_echo")]
    assert tool.type == "tool" and tool.name == "Bash" and tool.parent_id == root.id
    assert tool.input == {"command": "echo hi", "description": "Print hi"}
    _, result_block = tv.tool_results()["toolu_e2e_echo"]
    assert result_text(result_block) == "hi"  # Claude Code really ran it
    assert tool.output == "hi"
    assert tool.level == "DEFAULT" and not tool.status_message
    assert_tool_times(tv, tool, "toolu_e2e_echo")
    assert collections.Counter(o.type for o in got.values()) == {"span": 1, "generation": 2, "tool": 1}
    assert_within(second, got.values())


def test_each_run_fired_the_hook_without_errors(two_turns):
    t, first, second, *_ = two_turns
    # Claude Code's own record of the hook runs: one summary per Stop, both clean (checked in run()).
    lines = second.lines()
    summaries = [d for d in lines if d.get("type") == "system" and d.get("subtype") == "stop_hook_summary"]
    assert len(summaries) == 2
    assert first.result["result"] == ANSWER_1 and second.result["result"] == ANSWER_2
    for path in (t.state, t.state / "locks"):
        assert path.stat().st_mode & 0o777 == 0o700
    for path in t.state.iterdir():
        if path.is_file():
            assert path.stat().st_mode & 0o077 == 0, "%s is readable by others" % path


# ============================================================================ 2. failing and parallel tools


def test_failing_and_parallel_tools_are_paired_by_id(traced):
    t = traced
    missing = t.project / "no-such-file.txt"
    script = [
        reply(
            "Four at once.",
            tool_use("Bash", {"command": "sleep 0.8; echo slow-output", "description": "slow"}, id="toolu_slow"),
            tool_use("Bash", {"command": "echo fast-output", "description": "fast"}, id="toolu_fast"),
            tool_use("Bash", {"command": "echo oops >&2; exit 3", "description": "fail"}, id="toolu_exit3"),
            tool_use("Read", {"file_path": str(missing)}, id="toolu_missing"),
        ),
        reply("Two worked, two failed."),
    ]
    run = t.run("run the four tools", script, expect_result="Two worked, two failed.")
    (tv,) = main_turns(run.lines())
    order = ["toolu_slow", "toolu_fast", "toolu_exit3", "toolu_missing"]
    # The precondition that makes this test mean something: results landed in another order.
    assert tv.tool_result_order() != order and sorted(tv.tool_result_order()) == sorted(order)
    tid = trace_id_for(run.session_id, tv.prompt_id)
    t.wait_delivered(lambda: t.roots_with_output({tid: "Two worked, two failed."}))
    got = t.trace(tid)
    root_id = obs_id_for(tid, "root", tv.prompt_id)
    tools = {tool_id: got[obs_id_for(tid, "tool", tool_id)] for tool_id in order}
    for tool_id, tool in tools.items():
        assert tool.type == "tool" and tool.parent_id == root_id
        assert tool.input == tv.tool_uses()[tool_id][1]["input"]
        assert_tool_times(tv, tool, tool_id)
    assert tools["toolu_slow"].output == "slow-output" and tools["toolu_slow"].level == "DEFAULT"
    assert tools["toolu_fast"].output == "fast-output" and tools["toolu_fast"].level == "DEFAULT"
    assert not tools["toolu_slow"].status_message and not tools["toolu_fast"].status_message

    failed = tools["toolu_exit3"]
    assert failed.level == "ERROR"
    assert "Exit code 3" in failed.status_message and "oops" in failed.output
    unread = tools["toolu_missing"]
    assert unread.level == "ERROR" and unread.name == "Read"
    assert "does not exist" in unread.status_message
    assert_generations_match(tv, got, tid, root_id)
    assert_within(run, got.values())
    t.drain_and_check()


# ============================================================================ 3. background subagent


def test_background_subagent_nests_under_its_agent_tool(traced):
    t = traced
    script = Script(
        main=[
            reply(
                "Delegating.",
                tool_use(
                    "Agent",
                    {"description": "count files", "prompt": "SUBTASK-E2E: count the files", "subagent_type": "general-purpose"},
                    id="toolu_agent_e2e",
                ),
            ),
            reply("Launched; waiting."),
            reply("The subagent reported back: 3 files."),
        ],
        agents={
            "SUBTASK-E2E": [
                reply(
                    tool_use("Bash", {"command": "echo three", "description": "count"}, id="toolu_sub_e2e"),
                    usage=usage(40, 9, cache_read=5, cache_5m=3, cache_1h=2),
                ),
                reply("There are 3 files.", delay=0.5, usage=usage(50, 11, cache_read=6, cache_5m=4, cache_1h=1)),
            ]
        },
    )
    run = t.run("delegate counting to a subagent", script, expect_result="The subagent reported back: 3 files.")
    turns = main_turns(run.lines())
    assert len(turns) == 2, [tv.prompt[:40] for tv in turns]
    launch, notification = turns
    assert notification.prompt_row.get("origin", {}).get("kind") == "task-notification"
    launch_id = trace_id_for(run.session_id, launch.prompt_id)
    note_id = trace_id_for(run.session_id, notification.prompt_id)
    agent_id = launch.tool_results()["toolu_agent_e2e"][0]["toolUseResult"]["agentId"]
    agent_file = run.transcript.parent / run.session_id / "subagents" / ("agent-%s.jsonl" % agent_id)
    sub = agent_turn(agent_file)
    agent_obs_id = obs_id_for(launch_id, "agent", agent_id)

    def complete() -> bool:
        got = t.trace(launch_id)
        agent = got.get(agent_obs_id)
        return (
            t.roots_with_output({launch_id: "Launched; waiting.", note_id: "The subagent reported back: 3 files."})
            and agent is not None
            and agent.output == "There are 3 files."
            and obs_id_for(launch_id, "gen", list(sub.messages())[-1]) in got
        )

    t.wait_delivered(complete)
    traces = t.standin.traces()
    assert sorted(traces) == sorted([launch_id, note_id]), "one trace per prompt, no duplicates"

    got = t.trace(launch_id)
    root_id = obs_id_for(launch_id, "root", launch.prompt_id)
    assert_root_matches(launch, got[root_id], "Launched; waiting.")
    agent_tool = got[obs_id_for(launch_id, "tool", "toolu_agent_e2e")]
    assert agent_tool.type == "tool" and agent_tool.name == "Agent" and agent_tool.parent_id == root_id
    agent = got[agent_obs_id]
    assert agent.type == "agent" and agent.parent_id == agent_tool.id
    assert agent.input == "SUBTASK-E2E: count the files"
    assert agent.start_ms == ts_ms(sub.prompt_row["timestamp"])
    assert agent.end_ms in sub.timestamps and agent.end_ms >= max(ts_ms(r["timestamp"]) for r in sub.rows if r.get("type") == "assistant")
    assert_generations_match(sub, got, launch_id, agent.id)
    sub_tool = got[obs_id_for(launch_id, "tool", "toolu_sub_e2e")]
    assert sub_tool.parent_id == agent.id and sub_tool.output == "three" and sub_tool.input["command"] == "echo three"
    assert_tool_times(sub, sub_tool, "toolu_sub_e2e")
    assert_generations_match(launch, got, launch_id, root_id)
    for o in got.values():
        assert o.session_id == run.session_id

    # Nothing written for the notification turn may land in (or stretch) the launch turn's trace.
    for row in notification.rows:
        if row.get("uuid"):
            assert obs_id_for(launch_id, "event", row["uuid"]) not in got, (
                "a row of the task-notification turn (promptId %s) is an event of the launch turn's trace: %s"
                % (notification.prompt_id, json.dumps(row.get("message", {}).get("content"))[:120])
            )

    note = t.trace(note_id)
    note_root = note[obs_id_for(note_id, "root", notification.prompt_id)]
    assert note_root.trace_name.startswith("Task notification")
    assert note_root.output == "The subagent reported back: 3 files." == notification.final_text()
    assert_generations_match(notification, note, note_id, note_root.id)
    assert_within(run, list(got.values()) + list(note.values()))
    figures = closing_figures(t.standin, [launch_id, note_id])
    print("\nCLOSING FIGURES (background-agent session):", json.dumps(figures))
    t.drain_and_check()


# ============================================================================ 4. secrets


def _random(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def test_secrets_in_tool_output_never_leave_the_machine(claude_cli, tmp_path):
    # Built at run time so no secret-looking literal sits in the repository.
    aws = "AKIA" + _random(string.ascii_uppercase + string.digits, 16)
    anthropic = "sk-ant-api03-" + _random(string.ascii_letters + string.digits, 80) + "AA"
    github = "ghp_" + _random(string.ascii_letters + string.digits, 36)
    password = "Pw-" + _random(string.ascii_letters + string.digits, 18)
    leaked = [aws, anthropic, github, password]
    standin = new_standin().start()
    standin.stop()  # first queue only, so the queue file itself can be inspected
    try:
        t = Traced(tmp_path, standin)
        t.env["CC_LANGFUSE_RETRY_FOR"] = "0"  # the worker exits instead of retrying: the queue is inspected, then drained
        (t.project / "creds.env").write_text(
            "AWS_ACCESS_KEY_ID=%s\nANTHROPIC_API_KEY=%s\nGITHUB_TOKEN=%s\nPASSWORD=%s\n" % (aws, anthropic, github, password)
        )
        prompt = "Show me creds.env and tell me whether PASSWORD is set (file: ./creds.env, keep it short)"
        answer = "The file sets four values; the access key id is %s." % aws
        run = t.run(
            prompt,
            [reply(tool_use("Bash", {"command": "cat creds.env", "description": "show"}, id="toolu_cat")), reply(answer)],
            expect_result=answer,
        )
        (tv,) = main_turns(run.lines())
        assert all(s in result_text(tv.tool_results()["toolu_cat"][1]) for s in leaked)  # Claude Code saw them

        queued = t.queue_path.read_bytes().decode()
        assert t.queue_records(), "the turn should wait in the queue while the server is down"
        assert "[REDACTED" in queued
        for path in t.state.rglob("*"):
            if path.is_file():
                content = path.read_bytes().decode("utf-8", "replace")
                for s in leaked:
                    assert s not in content, "a secret is in %s" % path

        standin.start()
        t.drain_and_check(clean_log=False)  # the refused connection was logged, as it should be
        tid = trace_id_for(run.session_id, tv.prompt_id)
        received = json.dumps(standin.spans, default=str)
        assert standin.spans
        for s in leaked:
            assert s not in received, "a secret reached Langfuse"
        got = t.trace(tid)
        tool = got[obs_id_for(tid, "tool", "toolu_cat")]
        assert "[REDACTED" in tool.output
        assert "AWS_ACCESS_KEY_ID=" in tool.output  # only the values go, the file stays readable
        root = got[obs_id_for(tid, "root", tv.prompt_id)]
        assert root.input == prompt
        assert "[REDACTED" in root.output
    finally:
        standin.stop()


# ============================================================================ 5. a large tool output


def test_large_tool_output_is_cut_with_length_and_digest(traced):
    t = traced
    line = "line %05d: the quick brown fox jumps over the lazy dog again and again\n"
    (t.project / "big.txt").write_text("".join(line % i for i in range(4200)))  # ~300 KB
    prompt = "Read big.txt and tell me how many lines it has"
    answer = "It has 4200 lines."
    run = t.run(
        prompt,
        [reply(tool_use("Read", {"file_path": str(t.project / "big.txt"), "allow_large": True}, id="toolu_big")), reply(answer)],
        expect_result=answer,
    )
    (tv,) = main_turns(run.lines())
    original = result_text(tv.tool_results()["toolu_big"][1])
    assert len(original) > 250_000  # Claude Code really handed the whole file back
    tid = trace_id_for(run.session_id, tv.prompt_id)
    t.wait_delivered(lambda: t.roots_with_output({tid: answer}))
    got = t.trace(tid)
    tool = got[obs_id_for(tid, "tool", "toolu_big")]
    assert isinstance(tool.output, str)
    assert tool.output.startswith(original[:DEFAULT_MAX_FIELD_CHARS])
    assert DEFAULT_MAX_FIELD_CHARS <= len(tool.output) < DEFAULT_MAX_FIELD_CHARS + 500
    cut = tool.metadata["output_truncated"]
    assert cut["original_length"] == len(original)
    assert cut["sha256"] == hashlib.sha256(original.encode()).hexdigest()
    root = got[obs_id_for(tid, "root", tv.prompt_id)]
    assert root.input == prompt and root.output == answer
    assert not any(k.endswith("_truncated") for k in root.metadata)
    t.drain_and_check()


# ============================================================================ 6. idempotency


def test_resending_a_session_changes_nothing_in_langfuse(traced):
    t = traced
    run = t.run(
        "run echo hi",
        [reply(thinking("Run it."), tool_use("Bash", {"command": "echo hi"}, id="toolu_again")), reply("Done: hi.")],
        expect_result="Done: hi.",
    )
    (tv,) = main_turns(run.lines())
    tid = trace_id_for(run.session_id, tv.prompt_id)
    t.wait_delivered(lambda: t.roots_with_output({tid: "Done: hi."}))
    t.drain_and_check()
    before = {(o.trace_id, o.id): o for o in t.standin.observations()}
    received_before = len(t.standin.spans)
    assert len(before) == 4  # root, two generations, the tool

    (t.state / "langfuse_state.json").unlink()  # the hook forgets it ever read this session
    out = t.hook_cli("backfill", "--since", "1d").stdout
    assert "1 session(s)" in out
    t.wait_delivered(lambda: len(t.standin.spans) >= received_before + len(before))
    t.drain_and_check()

    resent = t.standin.spans[received_before:]
    assert {(s["trace_id"], s["span_id"]) for s in resent} == set(before)
    after = {(o.trace_id, o.id): o for o in t.standin.observations()}
    assert set(after) == set(before)
    for span in resent:
        old = before[(span["trace_id"], span["span_id"])]
        assert (span["start_ns"], span["end_ns"]) == (old.start_ns, old.end_ns), span["name"]
        assert span["parent_span_id"] == old.span["parent_span_id"]
        assert span["attributes"] == old.attributes, "re-sent %s differs" % span["name"]


# ============================================================================ 7. the server is down


def test_server_down_session_succeeds_and_drain_delivers_once(claude_cli, tmp_path):
    standin = new_standin().start()
    standin.stop()  # connection refused from now on; start() later reuses the port
    try:
        t = Traced(tmp_path, standin)
        t.env["CC_LANGFUSE_RETRY_FOR"] = "0"  # `drain` delivers (the worker's own retries: test_delivery_recovery.py)
        first = t.run(
            "first prompt while Langfuse is down",
            [reply(tool_use("Bash", {"command": "echo down"}, id="toolu_down")), reply("It printed down.")],
            expect_result="It printed down.",
        )
        second = t.run("second prompt, still down", [reply("Still fine.")], resume=first.session_id, expect_result="Still fine.")
        turns = main_turns(second.lines())
        ids = [trace_id_for(first.session_id, tv.prompt_id) for tv in turns]
        assert len(turns) == 2
        t.wait_worker()
        assert {r["key"] for r in t.queue_records()} == {"turn:" + i for i in ids}
        st = t.status()
        assert st["queue_turns"] == 2
        assert st["last_error"] and st["last_error"]["kind"] == "retry", st["last_error"]
        # Says what happened (which server refused) and that nothing is lost.
        assert "127.0.0.1:%d" % standin.port in st["last_error"]["detail"]
        assert "queue is kept" in st["last_error"]["advice"]

        standin.start()
        out = t.drain_and_check(clean_log=False)  # the refused connection was logged, as it should be
        assert "2 sent" in out, out
        traces = standin.traces()
        assert sorted(traces) == sorted(ids)
        assert len(standin.spans) == len(standin.observations()), "a span was sent twice"
        assert t.roots_with_output({ids[0]: "It printed down.", ids[1]: "Still fine."})
        time.sleep(1.0)  # no late sender may deliver the same turns again
        assert len(standin.spans) == len(standin.observations())
    finally:
        standin.stop()


# ============================================================================ 8. files in the user's project


def test_project_files_named_like_ours_or_the_stdlib_never_shadow_the_hook(claude_cli, tmp_path):
    """Hooks run in the user's project: its json.py or langfuse_hook.py must not replace ours."""
    standin = new_standin().start()
    try:
        t = Traced(tmp_path, standin)
        marker = tmp_path / "project-langfuse-hook-ran"
        (t.project / "json.py").write_text("raise SystemExit('the project json.py was imported')\n")
        (t.project / "langfuse_hook.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
        (t.project / "claude_code_langfuse").mkdir()
        (t.project / "claude_code_langfuse" / "__init__.py").write_text("raise SystemExit('the project package was imported')\n")
        run = t.run("which files are here?", [reply("Three of them.")], expect_result="Three of them.")
        (tv,) = main_turns(run.lines())
        tid = trace_id_for(run.session_id, tv.prompt_id)
        t.wait_delivered(lambda: t.roots_with_output({tid: "Three of them."}))
        assert not marker.exists(), "the project's langfuse_hook.py ran instead of ours"
        t.drain_and_check()
    finally:
        standin.stop()


# ============================================================================ 9. forked, continued and resumed sessions


def _usage_total(standin: LangfuseStandin, session_ids: set[str]) -> collections.Counter:
    totals: collections.Counter = collections.Counter()
    for o in standin.observations():
        if o.session_id in session_ids:
            for key, value in (o.usage_details or {}).items():
                totals[key] += value
    return totals


def test_fork_traces_only_its_own_turn_and_counts_nothing_twice(claude_cli, tmp_path):
    """`claude -p third --resume SID --fork-session`: Claude Code 2.1.328 copies the parent's lines
    into the fork's file under the fork's session id, with the fork's new promptId on every copied
    user line. Only the new prompt may become a trace; the parent's turns stay as they were."""
    standin = new_standin().start()
    try:
        t = Traced(tmp_path, standin)
        u1, u2, u3 = usage(110, 11, cache_read=5), usage(220, 22, cache_read=6), usage(330, 33, cache_read=7)
        first = t.run("first prompt", [reply("first answer", usage=u1)], expect_result="first answer")
        t.run("second prompt", [reply("second answer", usage=u2)], resume=first.session_id, expect_result="second answer")
        fork = t.run(
            "third prompt, in a fork",
            [reply("third answer", usage=u3)],
            resume=first.session_id,
            extra_args=["--fork-session"],
            expect_result="third answer",
        )
        assert fork.session_id != first.session_id
        parent_ids = [trace_id_for(first.session_id, tv.prompt_id) for tv in main_turns(read_jsonl(first.transcript))]
        # what Claude Code wrote: the copies keep their uuids but carry the fork's new promptId,
        # the same as the third prompt's (so promptId alone cannot tell them apart)
        prompts = [r for r in fork.lines() if r.get("type") == "user" and isinstance(r["message"].get("content"), str)]
        assert [r["message"]["content"] for r in prompts] == ["first prompt", "second prompt", "third prompt, in a fork"]
        assert len({r["promptId"] for r in prompts}) == 1
        third_id = trace_id_for(fork.session_id, prompts[-1]["promptId"])
        t.wait_delivered(
            lambda: t.roots_with_output({parent_ids[0]: "first answer", parent_ids[1]: "second answer", third_id: "third answer"})
        )
        t.wait_worker()
        t.drain_and_check()

        traces = standin.traces()
        assert sorted(traces) == sorted([*parent_ids, third_id]), "a copied turn became a trace of its own, or a turn is missing"
        fork_roots = [o for o in traces[third_id] if o.parent_id is None]
        assert [o.trace_name for o in fork_roots] == ["third prompt, in a fork"]
        assert fork_roots[0].metadata.get("forked_from") == first.session_id
        assert [o for o in traces[third_id] if o.type == "generation"], "the fork's own generation is missing"
        assert len([o for o in traces[third_id] if o.type == "generation"]) == 1, "the fork's trace holds copied generations"
        # totals over every generation equal the sum over distinct API responses
        totals = _usage_total(standin, {first.session_id, fork.session_id})
        assert totals["input"] == 110 + 220 + 330 and totals["output"] == 11 + 22 + 33, totals
    finally:
        standin.stop()


def test_continue_and_resume_append_turns_to_the_same_session(claude_cli, tmp_path):
    standin = new_standin().start()
    try:
        t = Traced(tmp_path, standin)
        first = t.run("opening prompt", [reply("opened")], expect_result="opened")
        t.run("resumed prompt", [reply("resumed")], resume=first.session_id, expect_result="resumed")
        cont = t.run("continued prompt", [reply("continued")], extra_args=["--continue"], expect_result="continued")
        assert cont.session_id == first.session_id
        turns = main_turns(cont.lines())
        ids = [trace_id_for(first.session_id, tv.prompt_id) for tv in turns]
        assert len(ids) == 3
        t.wait_delivered(lambda: t.roots_with_output(dict(zip(ids, ["opened", "resumed", "continued"], strict=True))))
        assert sorted(standin.traces()) == sorted(ids)
        t.drain_and_check()
    finally:
        standin.stop()


# ============================================================================ 10. nothing sent twice


def test_a_five_prompt_session_sends_every_span_once(claude_cli, tmp_path):
    """Each Stop, SubagentStop and SessionEnd used to re-send the whole open turn (72 span sends for
    37 observations in an 8-prompt session): Langfuse v4 counts every copy in trace cost until
    ClickHouse merges them. Now every observation reaches the server once."""
    standin = new_standin().start()
    try:
        t = Traced(tmp_path, standin)
        session_id = None
        for i in range(5):
            run = t.run(
                f"prompt {i}: list the files",
                [
                    reply(
                        tool_use("Bash", {"command": f"echo {i}", "description": "Print"}, id=f"toolu_once_{i}"), usage=usage(100 + i, 10)
                    ),
                    reply(f"answer {i}", usage=usage(200 + i, 20)),
                ],
                resume=session_id,
                expect_result=f"answer {i}",
            )
            session_id = session_id or run.session_id
        turns = main_turns(run.lines())
        ids = [trace_id_for(session_id, tv.prompt_id) for tv in turns]
        assert len(ids) == 5
        t.wait_delivered(lambda: t.roots_with_output({tid: f"answer {i}" for i, tid in enumerate(ids)}))
        t.wait_worker()
        t.drain_and_check()
        sends = collections.Counter((s["trace_id"], s["span_id"]) for s in standin.spans)
        assert len(standin.observations()) == 5 * 4  # root, two generations, one tool per turn
        assert max(sends.values()) == 1, {k: v for k, v in sends.items() if v > 1}
        totals = _usage_total(standin, {session_id})
        assert totals["input"] == sum(100 + i + 200 + i for i in range(5))
    finally:
        standin.stop()


# ============================================================================ 5. one bad character


def test_a_lone_surrogate_from_the_model_never_stops_the_session(claude_cli, tmp_path):
    """The model writes a tool call whose input holds a lone UTF-16 surrogate ("\\ud83d", valid
    JSON): a Bash description, a Write path (which the tool result echoes), the answer text.
    Claude Code 2.1.328 keeps it, escaped, in the transcript. That turn used to make every run
    fail with "surrogates not allowed" (queue, dead letters and status all looking fine) and
    no later turn of the session ever arrived. Now the turn arrives sanitized (U+FFFD), and so
    does every later one."""
    lone = "\ud83d"
    standin = new_standin().start()
    try:
        t = Traced(tmp_path, standin)
        first = t.run("first prompt", [reply("first answer")], expect_result="first answer")
        target = t.project / f"notes-{lone}.txt"
        t.run(
            "write the emoji notes",
            [
                reply(
                    "Writing.",
                    tool_use("Bash", {"command": "echo listed", "description": f"List files {lone}"}, id="toolu_lone_bash"),
                    tool_use("Write", {"file_path": str(target), "content": "notes\n"}, id="toolu_lone_write"),
                ),
                reply(f"Done {lone}"),
            ],
            resume=first.session_id,
            allowed_tools="Bash Read Agent Write",
            expect_result=f"Done {lone}",
        )
        third = t.run("third prompt", [reply("third answer")], resume=first.session_id, expect_result="third answer")
        raw = pathlib.Path(third.transcript).read_bytes()
        turns = main_turns(third.lines())
        assert [tv.prompt for tv in turns] == ["first prompt", "write the emoji notes", "third prompt"]
        bad = turns[1]
        # the precondition: Claude Code wrote the lone surrogate in the tool input, the result and the answer
        assert bad.tool_uses()["toolu_lone_bash"][1]["input"]["description"] == f"List files {lone}"
        assert lone in result_text(bad.tool_results()["toolu_lone_write"][1])
        assert bad.final_text() == f"Done {lone}"
        assert b"\\ud83d" in raw  # written as JSON.stringify writes it

        ids = [trace_id_for(first.session_id, tv.prompt_id) for tv in turns]
        t.wait_delivered(lambda: t.roots_with_output(dict(zip(ids, ["first answer", "Done \ufffd", "third answer"], strict=True))))
        got = t.trace(ids[1])
        bash = got[obs_id_for(ids[1], "tool", "toolu_lone_bash")]
        write = got[obs_id_for(ids[1], "tool", "toolu_lone_write")]
        assert bash.input == {"command": "echo listed", "description": "List files \ufffd"} and bash.output == "listed"
        assert write.input["file_path"] == str(target).replace(lone, "\ufffd")
        assert "\ufffd" in json.dumps(write.output, ensure_ascii=False) and lone not in json.dumps(write.output, ensure_ascii=False)
        assert sorted(standin.traces()) == sorted(ids)
        t.drain_and_check()  # nothing queued, no dead letter, no error in the log or in `status`
        assert "surrogates not allowed" not in (t.state / "langfuse_hook.log").read_text(errors="replace")
    finally:
        standin.stop()
