"""Issue 10, point 6: `insights --source langfuse` in a Langfuse project shared with other
applications counts only this product's traces (tag `claude-code`).

The read API stand-in of test_insights.py serves, beside the hook's own observations, another
application's traces in the same time window: roots, generations with cost, tools.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from test_insights import fixture_home, read_api, rows, run_json  # noqa: F401 - pytest fixtures

OTHER_APP = "0" * 31 + "a"


def other_app_observations(start: dt.datetime) -> list[dict]:
    """One trace of another application: a root, a generation of a known model with cost, a tool."""
    base = {
        "trace_id": OTHER_APP,
        "project_id": "proj-1",
        "environment": "default",
        "user_id": "svc",
        "session_id": "other-app-session",
        "tags": ["checkout-service"],
        "trace_name": "checkout",
        "level": "DEFAULT",
        "status_message": None,
        "metadata": {},
    }
    root = {
        **base,
        "id": "00000000000000a1",
        "start_time": start,
        "end_time": start + dt.timedelta(seconds=5),
        "parent_observation_id": None,
        "is_root_observation": True,
        "type": "SPAN",
        "name": "checkout",
        "input": "charge the card",
    }
    gen = {
        **base,
        "id": "00000000000000a2",
        "start_time": start + dt.timedelta(seconds=1),
        "end_time": start + dt.timedelta(seconds=2),
        "parent_observation_id": root["id"],
        "is_root_observation": False,
        "type": "GENERATION",
        "name": "claude-sonnet-4-5-20250929",
        "model": "claude-sonnet-4-5-20250929",
        "usage_details": {"input": 1_000_000, "output": 1_000_000, "total": 2_000_000},
        "cost_details": {"input": 3.0, "output": 15.0, "total": 18.0},
        "total_cost": 18.0,
        "input": None,
    }
    tool = {**gen, "id": "00000000000000a3", "type": "TOOL", "name": "charge_card", "model": None}
    for key in ("usage_details", "cost_details", "total_cost"):
        tool.pop(key)
    return [root, gen, tool]


@pytest.fixture
def shared(read_api):  # noqa: F811
    first = min(o["start_time"] for o in read_api.observations)
    read_api.observations = sorted(read_api.observations + other_app_observations(first), key=lambda o: (o["start_time"], o["id"]))
    return read_api


REPORTS = [["sessions"], ["tools"], ["usage"], ["usage", "--by", "model"], ["prompts", "card"]]


@pytest.mark.parametrize("argv", REPORTS, ids=[" ".join(a) for a in REPORTS])
def test_other_applications_traces_are_not_counted(shared, capsys, argv):
    local = run_json(capsys, *argv, "--source", "local")
    remote = run_json(capsys, *argv, "--source", "langfuse")
    assert remote["tables"] == local["tables"]
    text = json.dumps(remote)
    assert "other-app-session" not in text and "charge_card" not in text and "charge the card" not in text


def test_the_query_asks_the_server_for_claude_code_traces_only(shared, capsys):
    """Langfuse applies `filter` over the plain query parameters: it must carry the tag and repeat
    the type / root and time conditions."""
    run_json(capsys, "sessions", "--since", "30d", "--source", "langfuse")
    first_pages = [r for r in shared.requests if not r["params"].get("cursor")]
    assert len(first_pages) == 3  # roots, tools, generations
    for request in first_pages:
        conditions = json.loads(request["params"]["filter"])
        assert {"type": "arrayOptions", "column": "traceTags", "operator": "any of", "value": ["claude-code"]} in conditions
        columns = {c["column"] for c in conditions}
        assert "startTime" in columns and ({"isRootObservation", "type"} & columns)
    root_filter = json.loads(next(r for r in first_pages if r["params"].get("isRootObservation") == "true")["params"]["filter"])
    assert {"type": "boolean", "column": "isRootObservation", "operator": "=", "value": True} in root_filter
    usage = rows(run_json(capsys, "usage", "--source", "langfuse"))
    assert all(r.get("cost") != 18.0 for r in usage)
