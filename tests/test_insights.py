"""hooks/insights.py: known answers on small hand-written transcripts and on the real samples, and
the Langfuse source against a loopback read API that serves the SDK's own response models.

Expected numbers are worked out by hand from the fixture below, never by calling the report code.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import pathlib
import secrets
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from claude_code_langfuse import insights
from claude_code_langfuse.backfill import session_files
from claude_code_langfuse.config import load_settings
from claude_code_langfuse.records import TraceContext, project_name, trace_id_for, turn_record
from claude_code_langfuse.redaction import Redactor, sanitize_record
from claude_code_langfuse.transcript import iter_rows
from claude_code_langfuse.turns import group_turns

HOOKS = pathlib.Path(__file__).resolve().parent.parent / "hooks"
from samples import SAMPLES  # noqa: E402

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
SONNET = "claude-sonnet-4-5-20250929"
UNKNOWN_MODEL = "claude-unreleased-9"  # a name genai-prices (the price source) does not know
# every generation of the fixture reports this usage
USAGE = {
    "input_tokens": 10,
    "output_tokens": 20,
    "cache_read_input_tokens": 1000,
    "cache_creation_input_tokens": 100,
    "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 0},
}
GEN_TOKENS = 10 + 20 + 1000 + 100
# Sonnet 4.5 list prices per MTok: input 3, output 15, cache read 0.30, cache write 5m 3.75
GEN_COST = (10 * 3 + 20 * 15 + 1000 * 0.30 + 100 * 3.75) / 1e6


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class SessionWriter:
    """Writes one Claude Code 2.1-style session transcript: prompt, tool_use/tool_result pairs, answer."""

    def __init__(self, root: pathlib.Path, session_id: str, cwd: str):
        self.session_id, self.cwd = session_id, cwd
        slug = cwd.replace("/", "-")
        self.path = root / slug / f"{session_id}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        self.n = 0

    def _id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.session_id}-{self.n}"

    def _base(self, kind: str, t: dt.datetime) -> dict:
        return {
            "type": kind,
            "uuid": self._id("u"),
            "sessionId": self.session_id,
            "timestamp": iso(t),
            "cwd": self.cwd,
            "version": "2.1.328",
            "gitBranch": "main",
        }

    def turn(self, prompt: str, start: dt.datetime, tools: list[tuple[str, bool]], model: str = SONNET) -> None:
        """One turn: each tool takes 10 s (call at +1 s, result at +10 s); the answer comes 5 s after the last result."""
        pid = self._id("prompt")
        self.rows.append(self._base("user", start) | {"promptId": pid, "message": {"role": "user", "content": prompt}})
        t = start
        for name, failed in tools:
            tu = self._id("toolu")
            self.rows.append(
                self._base("assistant", t + dt.timedelta(seconds=1))
                | {
                    "requestId": self._id("req"),
                    "message": {
                        "id": self._id("msg"),
                        "model": model,
                        "role": "assistant",
                        "stop_reason": "tool_use",
                        "usage": USAGE,
                        "content": [{"type": "tool_use", "id": tu, "name": name, "input": {"x": 1}}],
                    },
                }
            )
            t += dt.timedelta(seconds=10)
            self.rows.append(
                self._base("user", t)
                | {
                    "promptId": pid,
                    "message": {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": tu, "content": "boom" if failed else "ok", "is_error": failed}],
                    },
                }
            )
        t += dt.timedelta(seconds=5)
        self.rows.append(
            self._base("assistant", t)
            | {
                "requestId": self._id("req"),
                "message": {
                    "id": self._id("msg"),
                    "model": model,
                    "role": "assistant",
                    "stop_reason": "end_turn",
                    "usage": USAGE,
                    "content": [{"type": "text", "text": "Done."}],
                },
            }
        )
        self.rows.append(self._base("system", t) | {"subtype": "turn_duration", "durationMs": 1})

    def write(self) -> None:
        self.path.write_text("".join(json.dumps(r) + "\n" for r in self.rows))


def day(n_days_ago: int, hour: int = 10) -> dt.datetime:
    return (NOW - dt.timedelta(days=n_days_ago)).replace(hour=hour, minute=0, second=0)


# The fixture, by hand:
#   goal  (goalapp, 2 days ago): 3 turns; tools Bash ok, Read ok, Edit ERR | Bash ERR, Bash ok | Bash ok
#   tax   (taxapp,  1 day ago):  2 turns; tools Read ok | Write ok, Bash ok
#   csrf  (taxapp,  3 days ago): 1 turn, no tools, an unpriced model
#   old   (goalapp, 10 days ago): 1 turn; Bash ok — outside the default 7-day window
# Turn duration = 10 s per tool + 5 s. Generations per turn = tools + 1.
@pytest.fixture
def fixture_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    root = home / ".claude" / "projects"
    goal = SessionWriter(root, "sess-goal", "/home/u/goalapp")
    goal.turn("Fix the goal-saving bug: goals vanish after reload", day(2), [("Bash", False), ("Read", False), ("Edit", True)])
    goal.turn("still broken after the fix", day(2, 11), [("Bash", True), ("Bash", False)])
    goal.turn("thanks, commit it", day(2, 12), [("Bash", False)])
    goal.write()
    tax = SessionWriter(root, "sess-tax", "/home/u/taxapp")
    tax.turn("The TAX total is off by one cent", day(1), [("Read", False)])
    tax.turn("add a test for the rounding", day(1, 11), [("Write", False), ("Bash", False)])
    tax.write()
    csrf = SessionWriter(root, "sess-csrf", "/home/u/taxapp")
    csrf.turn("add CSRF protection to the settings form", day(3), [], model=UNKNOWN_MODEL)
    csrf.write()
    old = SessionWriter(root, "sess-old", "/home/u/goalapp")
    old.turn("goal page: old question", day(10), [("Bash", False)])
    old.write()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CC_LANGFUSE_CONFIG", str(tmp_path / "no-config.json"))
    monkeypatch.setenv("CC_LANGFUSE_STATE_DIR", str(tmp_path / "state"))
    for name in (
        "CLAUDE_CONFIG_DIR",
        "CC_LANGFUSE_PUBLIC_KEY",
        "CC_LANGFUSE_SECRET_KEY",
        "LANGFUSE_PUBLIC_KEY",
        "LANGFUSE_SECRET_KEY",
        "CC_LANGFUSE_BASE_URL",
        "LANGFUSE_BASE_URL",
        "LANGFUSE_HOST",
    ):
        monkeypatch.delenv(name, raising=False)
    return home


def run_json(capsys, *argv: str) -> dict:
    code = insights.main([*argv, "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def rows(report: dict, table: int = 0) -> list[dict]:
    return report["tables"][table]["rows"]


# ---------------------------------------------------------------------------- local source, known answers


def test_sessions_report_counts_turns_tools_errors_time_tokens_cost(fixture_home, capsys):
    got = {r["session_id"]: r for r in rows(run_json(capsys, "sessions"))}
    assert set(got) == {"sess-goal", "sess-tax", "sess-csrf"}  # sess-old is 10 days old
    goal = got["sess-goal"]
    assert (goal["project"], goal["turns"], goal["tool_calls"], goal["tool_errors"]) == ("goalapp", 3, 6, 2)
    assert goal["duration_s"] == pytest.approx((3 * 10 + 5) + (2 * 10 + 5) + (1 * 10 + 5))
    assert goal["tokens"] == (4 + 3 + 2) * GEN_TOKENS
    assert goal["cost"] == pytest.approx(9 * GEN_COST)
    assert goal["first_prompt"] == "Fix the goal-saving bug: goals vanish after reload"
    tax = got["sess-tax"]
    assert (tax["turns"], tax["tool_calls"], tax["tool_errors"], tax["tokens"]) == (2, 3, 0, 5 * GEN_TOKENS)
    csrf = got["sess-csrf"]
    assert csrf["cost"] is None and csrf["tokens"] == GEN_TOKENS  # unknown model: tokens yes, cost not guessed
    order = [r["session_id"] for r in rows(run_json(capsys, "sessions"))]
    assert order == ["sess-goal", "sess-tax", "sess-csrf"]  # most turns first
    assert [r["session_id"] for r in rows(run_json(capsys, "sessions", "--sort", "errors", "--limit", "1"))] == ["sess-goal"]


def test_tools_report_usage_and_error_rates(fixture_home, capsys):
    got = {r["tool"]: r for r in rows(run_json(capsys, "tools"))}
    assert {k: (v["calls"], v["errors"], v["sessions"]) for k, v in got.items()} == {
        "Bash": (5, 1, 2),
        "Read": (2, 0, 2),
        "Edit": (1, 1, 1),
        "Write": (1, 0, 1),
    }
    assert got["Bash"]["error_rate"] == pytest.approx(0.2)
    with_old = {r["tool"]: r["calls"] for r in rows(run_json(capsys, "tools", "--since", "2w"))}
    assert with_old["Bash"] == 6


def test_search_compares_turns_per_term(fixture_home, capsys):
    report = run_json(capsys, "search", "goal", "tax")
    summary = {r["term"]: r for r in rows(report)}
    assert (summary["goal"]["sessions"], summary["goal"]["turns"], summary["goal"]["matching_turns"]) == (1, 3, 1)
    assert (summary["tax"]["sessions"], summary["tax"]["turns"], summary["tax"]["matching_turns"]) == (1, 2, 1)  # case-insensitive
    assert [r["session_id"] for r in rows(report, 1)] == ["sess-goal"]
    assert [r["session_id"] for r in rows(report, 2)] == ["sess-tax"]
    wider = {r["term"]: r for r in rows(run_json(capsys, "search", "goal", "--since", "2w"))}
    assert (wider["goal"]["sessions"], wider["goal"]["turns"]) == (2, 4)


def test_prompts_search_names_the_session(fixture_home, capsys):
    found = rows(run_json(capsys, "prompts", "csrf"))
    assert [(r["session_id"], r["project"], r["turn"]) for r in found] == [("sess-csrf", "taxapp", 1)]
    assert found[0]["prompt"] == "add CSRF protection to the settings form"
    # the trace id Langfuse shows for that turn: sha256(session:promptId), promptId of the fixture's first prompt
    assert found[0]["trace_id"] == trace_id_for("sess-csrf", "prompt-sess-csrf-1")
    assert [r["turn"] for r in rows(run_json(capsys, "prompts", "still", "fix"))] == [2]  # every term must match
    assert rows(run_json(capsys, "prompts", "nothing-like-this")) == []


def test_usage_by_day_model_project(fixture_home, capsys):
    got = rows(run_json(capsys, "usage"))
    by_key = {(r["day"], r["model"], r["project"]): r for r in got if r["day"] != "total"}
    d1, d2, d3 = (day(n).strftime("%Y-%m-%d") for n in (1, 2, 3))
    assert set(by_key) == {(d2, SONNET, "goalapp"), (d1, SONNET, "taxapp"), (d3, UNKNOWN_MODEL, "taxapp")}
    goal = by_key[(d2, SONNET, "goalapp")]
    assert (goal["generations"], goal["input"], goal["output"], goal["cache_read"], goal["cache_write"]) == (9, 90, 180, 9000, 900)
    assert goal["cost"] == pytest.approx(9 * GEN_COST)
    assert by_key[(d3, UNKNOWN_MODEL, "taxapp")]["cost"] is None
    total = got[-1]
    assert total["day"] == "total" and total["tokens"] == 15 * GEN_TOKENS and total["cost"] == pytest.approx(14 * GEN_COST)
    report = run_json(capsys, "usage", "--by", "model")
    assert {r["model"]: r["generations"] for r in rows(report)} == {SONNET: 14, UNKNOWN_MODEL: 1, "total": 15}
    assert any(UNKNOWN_MODEL in n for n in report["notes"])


def test_project_filter(fixture_home, capsys):
    got = rows(run_json(capsys, "sessions", "--project", "taxapp"))
    assert sorted(r["session_id"] for r in got) == ["sess-csrf", "sess-tax"]
    assert rows(run_json(capsys, "sessions", "--project", "nope")) == []


def test_until_closes_the_window(fixture_home, capsys):
    until = (NOW - dt.timedelta(days=2)).strftime("%Y-%m-%d")  # midnight UTC two days ago: before sess-goal
    got = rows(run_json(capsys, "sessions", "--since", "2w", "--until", until))
    assert sorted(r["session_id"] for r in got) == sorted(
        s for s, n in (("sess-old", 10), ("sess-csrf", 3)) if day(n) < dt.datetime.fromisoformat(until + "T00:00:00+00:00")
    )


def test_text_output_is_an_aligned_table(fixture_home, capsys):
    assert insights.main(["sessions"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("session "))
    rule = lines[header + 1]
    assert set(rule) <= {"-", " "}
    body = lines[header + 2 : header + 5]
    # numeric columns are right-aligned: "turns" ends where its values end
    end = lines[header].index("turns") + len("turns")
    assert [ln[end - 1] for ln in body] == ["3", "2", "1"]
    assert all(ln.startswith("sess-") for ln in body)


def test_markdown_output(fixture_home, capsys):
    assert insights.main(["tools", "--markdown"]) == 0
    out = capsys.readouterr().out
    table = [ln for ln in out.splitlines() if ln.startswith("|")]
    assert table[0] == "| tool | calls | errors | error rate | sessions |"
    assert table[1] == "|---|---:|---:|---:|---:|"
    assert table[2] == "| Bash | 5 | 1 | 20.0% | 2 |"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sessions", "--since", "yesterday"], "--since 'yesterday'"),
        (["sessions", "--since", "1d", "--until", "3d"], "must be after"),
        (["usage", "--by", "week"], "--by 'week'"),
        (["sessions", "--limit", "0"], "not a positive"),
        (["nonsense"], "invalid choice"),
        (["prompts", " "], "must not be empty"),
        (["sessions", "--source", "langfuse"], "needs Langfuse keys"),
    ],
)
def test_bad_input_exits_2_with_a_message(fixture_home, argv, message):
    env = {**os.environ, "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, str(HOOKS / "insights.py"), *argv], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------- real samples


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="shared sample transcripts not present")
def test_real_samples_match_an_independent_count(tmp_path, monkeypatch, capsys):
    project_dir = tmp_path / "home" / ".claude" / "projects" / "sample"
    project_dir.mkdir(parents=True)
    expected = {}
    for path in sorted(SAMPLES.glob("dkimuson-*.jsonl")) + sorted(SAMPLES.glob("fdpearce-*.jsonl")):
        sid = path.name.split("__", 1)[1][: -len(".jsonl")]
        (project_dir / f"{sid}.jsonl").symlink_to(path)
        tool_ids, errors, outputs = set(), 0, {}
        for line in path.read_text().splitlines():
            d = json.loads(line)
            msg = d.get("message") if isinstance(d.get("message"), dict) else {}
            for b in msg.get("content") if isinstance(msg.get("content"), list) else []:
                if b.get("type") == "tool_use":
                    tool_ids.add(b["id"])
                elif b.get("type") == "tool_result" and b.get("is_error"):
                    errors += 1
            if d.get("type") == "assistant" and msg.get("id") and msg.get("model") != "<synthetic>":
                outputs[msg["id"]] = max(outputs.get(msg["id"], 0), (msg.get("usage") or {}).get("output_tokens") or 0)
        expected[sid] = (len(tool_ids), errors, sum(outputs.values()))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CC_LANGFUSE_CONFIG", str(tmp_path / "none.json"))
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    sessions = {r["session_id"]: r for r in rows(run_json(capsys, "sessions", "--since", "2000-01-01", "--limit", "100"))}
    assert {s: (r["tool_calls"], r["tool_errors"]) for s, r in sessions.items()} == {s: e[:2] for s, e in expected.items()}
    # README of the samples: fe5e1c67 has 2 human prompts, 167 tool calls (subagents inline), 51,933 output tokens deduplicated
    assert sessions["fe5e1c67-53e7-4862-81ae-d0e013e3270b"]["turns"] == 2
    assert expected["fe5e1c67-53e7-4862-81ae-d0e013e3270b"][0] == 167
    usage = rows(run_json(capsys, "usage", "--by", "project", "--since", "2000-01-01"))
    outputs = {r["project"]: r["output"] for r in usage}
    assert outputs["total"] == sum(e[2] for e in expected.values())


# ---------------------------------------------------------------------------- Langfuse source


from langfuse.api.commons.types.observation_v2 import ObservationV2  # noqa: E402
from langfuse.api.observations.types.observations_v2meta import ObservationsV2Meta  # noqa: E402
from langfuse.api.observations.types.observations_v2response import ObservationsV2Response  # noqa: E402

FIELD_GROUPS = {
    "core": {"id", "trace_id", "start_time", "end_time", "project_id", "parent_observation_id", "type"},
    "basic": {
        "name",
        "level",
        "status_message",
        "version",
        "environment",
        "bookmarked",
        "public",
        "user_id",
        "session_id",
        "is_root_observation",
    },
    "time": {"completion_start_time", "created_at", "updated_at"},
    "io": {"input", "output"},
    "metadata": {"metadata"},
    "model": {"model", "internal_model_id", "model_parameters", "model_id", "input_price", "output_price", "total_price"},
    "usage": {"usage_details", "cost_details", "total_cost", "usage_pricing_tier_name"},
    "prompt": {"prompt_id", "prompt_name", "prompt_version"},
    "metrics": {"latency", "time_to_first_token"},
    "trace_context": {"tags", "release", "trace_name"},
}
KNOWN_PARAMS = {
    "fields",
    "limit",
    "cursor",
    "type",
    "isRootObservation",
    "fromStartTime",
    "toStartTime",
    "traceId",
    "sessionId",
    "userId",
    "name",
    "level",
    "parentObservationId",
    "environment",
    "version",
    "filter",
    "expandMetadata",
}
# our own price table for the stand-in's cost: what the server's model prices would compute
STANDIN_PRICES = {
    SONNET: {
        "input": 3e-6,
        "output": 15e-6,
        "cache_read_input_tokens": 0.3e-6,
        "input_cache_creation_5m": 3.75e-6,
        "input_cache_creation_1h": 6e-6,
    }
}


def _dt(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def stored_observations(record: dict) -> list[dict]:
    """What Langfuse v4 keeps of one hook record: one row per observation, trace fields denormalised."""
    trace = record["trace"]
    out = []
    for o in record["observations"]:
        row = {
            "id": o["id"],
            "trace_id": trace["id"],
            "start_time": _dt(o["start"]),
            "end_time": _dt(o["end"]),
            "project_id": "proj-1",
            "parent_observation_id": o["parent_id"],
            "type": o["type"].upper(),
            "name": o["name"],
            "level": o["level"],
            "status_message": o["status_message"],
            "environment": "default",
            "user_id": trace["user_id"],
            "session_id": trace["session_id"],
            "is_root_observation": o["parent_id"] is None,
            "input": o["input"] if isinstance(o["input"], str) or o["input"] is None else json.dumps(o["input"]),
            # v4 keeps metadata values as strings (JSON-encoded for non-strings)
            "metadata": {k: v if isinstance(v, str) else json.dumps(v) for k, v in (o["metadata"] or {}).items()},
            "tags": trace["tags"],
            "trace_name": trace["name"],
        }
        if o["type"] == "generation":
            usage = dict(o["usage_details"] or {})
            row["model"] = o["model"]
            row["usage_details"] = {**usage, "total": sum(usage.values())}  # the server adds a total
            prices = STANDIN_PRICES.get(o["model"])
            if prices:
                costs = {k: v * prices[k] for k, v in usage.items() if k in prices}
                row["cost_details"] = {**costs, "total": sum(costs.values())}
                row["total_cost"] = sum(costs.values())
        out.append(row)
    return out


def records_for(home: pathlib.Path) -> list[dict]:
    """The hook's own records for every fixture transcript (what the sender would deliver)."""
    settings = load_settings()
    redactor = Redactor(settings.redact, settings.redact_patterns)
    records = []
    for path in session_files([str(home / ".claude" / "projects")]):
        sid = os.path.basename(path)[:-6]
        with open(path, "rb") as f:
            for number, turn in enumerate(group_turns(iter_rows(f, 0)), 1):
                ctx = TraceContext(sid, "alice", project_name(turn.meta_row.get("cwd")), number, trace_id_for(sid, turn.key))
                records.append(sanitize_record(turn_record(turn, ctx), redactor, settings.max_field_chars))
    return records


class ReadAPIStandin:
    """GET /api/public/v2/observations like a Langfuse v4 server: Basic auth, filters, field groups, cursor paging.

    Pages hold at most 2 observations whatever `limit` asks, so the client must follow cursors.
    """

    PAGE = 2

    def __init__(self, public_key: str, secret_key: str, observations: list[dict]):
        self.auth = "Basic " + base64.b64encode(f"{public_key}:{secret_key}".encode()).decode()
        self.observations = sorted(observations, key=lambda o: (o["start_time"], o["id"]))
        self.requests: list[dict] = []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                params = dict(urllib.parse.parse_qsl(url.query))
                standin.requests.append({"path": url.path, "params": params})
                status, body = standin.answer(url.path, params, self.headers.get("Authorization", ""))
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str, params: dict, authorization: str):
        if authorization != self.auth:
            return 401, {"message": "Invalid credentials. Confirm that you've configured the correct host."}
        if path != "/api/public/v2/observations":
            return 404, {"message": "not found"}
        unknown = set(params) - KNOWN_PARAMS
        if unknown:
            return 400, {"message": f"unknown query parameters {sorted(unknown)}"}
        groups = {"core", *(params.get("fields") or "core,basic").split(",")}
        if groups - set(FIELD_GROUPS):
            return 400, {"message": f"unknown field groups {sorted(groups - set(FIELD_GROUPS))}"}
        selected = self.observations
        if "isRootObservation" in params:
            want = params["isRootObservation"] == "true"
            selected = [o for o in selected if o["is_root_observation"] == want]
        if "type" in params:
            selected = [o for o in selected if o["type"] == params["type"]]
        if "fromStartTime" in params:
            selected = [o for o in selected if o["start_time"] >= _dt(params["fromStartTime"])]
        if "toStartTime" in params:
            selected = [o for o in selected if o["start_time"] < _dt(params["toStartTime"])]
        offset = int(base64.b64decode(params["cursor"]).decode()) if params.get("cursor") else 0
        limit = min(int(params.get("limit") or 50), 1000, self.PAGE)
        page = selected[offset : offset + limit]
        allowed = set().union(*(FIELD_GROUPS[g] for g in groups))
        next_cursor = base64.b64encode(str(offset + limit).encode()).decode() if offset + limit < len(selected) else None
        response = ObservationsV2Response(
            data=[ObservationV2(**{k: v for k, v in o.items() if k in allowed}) for o in page],
            meta=ObservationsV2Meta(cursor=next_cursor),
        )
        return 200, response.json()


@pytest.fixture
def read_api(fixture_home, monkeypatch):
    # fresh keys per test: the SDK keeps one client per public key per process (bound to its first base URL)
    token = secrets.token_hex(6)
    pk, sk = f"pk-lf-insights-{token}", f"sk-lf-insights-{token}"
    standin = ReadAPIStandin(pk, sk, [o for r in records_for(fixture_home) for o in stored_observations(r)])
    monkeypatch.setenv("CC_LANGFUSE_PUBLIC_KEY", pk)
    monkeypatch.setenv("CC_LANGFUSE_SECRET_KEY", sk)
    monkeypatch.setenv("CC_LANGFUSE_BASE_URL", standin.base_url)
    yield standin
    standin.close()


REPORTS = [
    ["sessions"],
    ["tools"],
    ["search", "goal", "tax"],
    ["prompts", "csrf"],
    ["prompts", "the"],
    ["usage"],
    ["usage", "--by", "model,project"],
    ["sessions", "--project", "taxapp", "--since", "2w"],
]


@pytest.mark.parametrize("argv", REPORTS, ids=[" ".join(a) for a in REPORTS])
def test_langfuse_source_gives_the_same_report_as_local(read_api, capsys, argv):
    local = run_json(capsys, *argv, "--source", "local")
    remote = run_json(capsys, *argv, "--source", "langfuse")
    assert remote["tables"] == local["tables"]
    assert any(r["rows"] for r in local["tables"])  # the comparison is about real rows
    assert remote["source"] == "langfuse" and "Langfuse" in remote["cost_basis"]
    assert "estimate" in local["cost_basis"]
    paths = {r["path"] for r in read_api.requests}
    assert paths == {"/api/public/v2/observations"}
    cursors = [r for r in read_api.requests if r["params"].get("cursor")]
    assert cursors, "the client must follow meta.cursor"
    assert all("fromStartTime" in r["params"] for r in read_api.requests)


def test_langfuse_source_reads_only_what_it_needs(read_api, capsys):
    run_json(capsys, "tools", "--source", "langfuse")
    roots = [r for r in read_api.requests if r["params"].get("isRootObservation") == "true"]
    children = [r for r in read_api.requests if r["params"].get("type") in ("TOOL", "GENERATION")]
    assert roots and children
    assert all("io" not in r["params"]["fields"] for r in children)  # tool outputs can be huge: never fetched


def test_langfuse_wrong_keys_exit_1_with_advice(read_api, monkeypatch, capsys):
    monkeypatch.setenv("CC_LANGFUSE_SECRET_KEY", "sk-lf-wrong")
    assert insights.main(["sessions", "--source", "langfuse"]) == 1
    err = capsys.readouterr().err
    assert "rejected the keys" in err and "HTTP 401" in err


def test_langfuse_unreachable_exit_1_with_advice(fixture_home, monkeypatch, capsys):
    monkeypatch.setenv("CC_LANGFUSE_PUBLIC_KEY", "pk-lf-x-" + secrets.token_hex(6))
    monkeypatch.setenv("CC_LANGFUSE_SECRET_KEY", "sk-lf-x")
    monkeypatch.setenv("CC_LANGFUSE_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("CC_LANGFUSE_TIMEOUT", "2")
    assert insights.main(["usage", "--source", "langfuse"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach Langfuse at http://127.0.0.1:9" in err and "--source local" in err


def test_langfuse_v3_server_without_v2_api(read_api, monkeypatch, capsys):
    read_api.answer = lambda path, params, auth: (404, {"message": "not found"})
    assert insights.main(["sessions", "--source", "langfuse"]) == 1
    assert "HTTP 404" in (err := capsys.readouterr().err) and "Langfuse v4 server" in err
