"""`models sync`, doctor's price check and insights' local cost, against the stand-in's models API.

The stand-in (tests/standin_models.py) answers GET/POST /api/public/models in Langfuse's shapes,
validates a POST like Langfuse, and prices a generation under Langfuse's rules written apart from
the hook's code; genai-prices is the price source the definitions must carry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from claude_code_langfuse import models
from claude_code_langfuse.config import Settings
from fixtures_standin import langfuse_standin  # noqa: F401 - fixture
from standin_models import _managed
from transcript_factory import Transcript, text, usage

REPO = Path(__file__).resolve().parents[1]
OPUS55 = "claude-opus-5-5"
# one Opus 5.5 generation: 3 fresh input, 1200 output, 40k cache read, 2k written for 5m, 6k for 1h
SAMPLE_USAGE = {
    "input": 3,
    "output": 1200,
    "cache_read_input_tokens": 40_000,
    "input_cache_creation_5m": 2_000,
    "input_cache_creation_1h": 6_000,
}
# genai-prices 0.2.x, Claude Opus 5.5 per MTok: input 4, output 20, cache read 0.2, write 5m 5, 1h 8; fast mode doubles each
SAMPLE_COST = (3 * 4 + 1200 * 20 + 40_000 * 0.2 + 2_000 * 5 + 6_000 * 8) / 1e6
SAMPLE_FAST_COST = 2 * SAMPLE_COST


def settings_for(standin, state: Path, secret: str | None = None) -> Settings:
    return Settings(
        user_id="tester",
        state_dir=str(state),
        base_url=standin.base_url,
        public_key=standin.public_key,
        secret_key=secret or standin.secret_key,
        timeout=5.0,
    )


def projects(tmp_path: Path, *model_names: str) -> Path:
    """~/.claude/projects with one session per model, written as Claude Code 2.1.328 does."""
    root = tmp_path / "projects"
    for i, name in enumerate(model_names):
        t = Transcript(str(root / "-home-dev-proj" / f"session-{i}.jsonl"))
        t.prompt("hello")
        t.respond(text("hi"), model=name, u=usage())
    return root


def run_sync(settings, roots, *, dry_run=False, extra=(), since="30d", capsys=None):
    rc = models.cmd_models_sync(settings, dry_run, list(extra), since, roots=[str(r) for r in roots])
    out = capsys.readouterr() if capsys else None
    return rc, out


# ---------------------------------------------------------------------------- the definition and its cost


def test_opus_5_5_definition_prices_a_generation_as_genai_prices_does(langfuse_standin, tmp_path, capsys):  # noqa: F811
    roots = [projects(tmp_path, OPUS55)]
    assert langfuse_standin.models.cost(OPUS55, SAMPLE_USAGE) is None  # Langfuse's list cannot price it: $0 today
    rc, out = run_sync(settings_for(langfuse_standin, tmp_path / "state"), roots, capsys=capsys)
    assert rc == 0, out.err
    posted = langfuse_standin.models.posted
    assert [b["modelName"] for b in posted] == [OPUS55] and langfuse_standin.models.rejected == []
    body = posted[0]
    print(json.dumps(body, indent=1), file=sys.__stdout__)  # the closing report shows it
    assert body["unit"] == "TOKENS" and body["matchPattern"] == r"(?i)^(anthropic\/)?(claude-opus-5-5)$"
    assert [t["name"] for t in body["pricingTiers"]] == ["Standard", "Fast mode"]
    fast = body["pricingTiers"][1]
    assert fast["conditions"] == [{"source": "model_parameters", "key": "speed", "operator": "in", "values": ["fast"]}]
    # every usage key the hook sends has a price, in every tier
    for tier in body["pricingTiers"]:
        assert set(tier["prices"]) == set(models.USAGE_PRICE_FIELDS)
    cost, tier = langfuse_standin.models.cost(OPUS55, SAMPLE_USAGE)
    assert tier == "Standard" and cost == pytest.approx(SAMPLE_COST, rel=1e-9)
    cost, tier = langfuse_standin.models.cost(OPUS55, SAMPLE_USAGE, {"speed": "fast"})
    assert tier == "Fast mode" and cost == pytest.approx(SAMPLE_FAST_COST, rel=1e-9)
    # the same model name as Claude Code or a gateway writes it
    assert langfuse_standin.models.cost("anthropic/Claude-Opus-5-5", SAMPLE_USAGE)[0] == pytest.approx(SAMPLE_COST)
    assert langfuse_standin.models.cost("claude-opus-5-5-fast", SAMPLE_USAGE) is None  # whole name only
    print(f"cost standard ${cost / 2:.6f}, fast ${cost:.6f}", file=sys.__stdout__)


@pytest.mark.parametrize("fast", [False, True])
def test_langfuse_cost_equals_genai_prices_calc_price(fast):
    """The definition, priced by Langfuse's rules (stand-in), equals genai-prices' own calculation."""
    import genai_prices
    from standin_models import ModelsAPI

    api = ModelsAPI()
    api.managed = []
    assert api.post(json.dumps(models.model_definition(models.lookup_prices(OPUS55))).encode())[0] == 200
    gp = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=3 + 40_000 + 2_000 + 6_000,  # genai-prices counts the whole prompt
            output_tokens=1200,
            cache_read_tokens=40_000,
            cache_write_tokens=8_000,
            cache_write_5m_tokens=2_000,
            cache_write_1h_tokens=6_000,
        ),
        OPUS55,
        price_context={"speed": "fast"} if fast else None,
    )
    ours, _ = api.cost(OPUS55, SAMPLE_USAGE, {"speed": "fast"} if fast else {})
    assert Decimal(str(ours)).quantize(Decimal("1e-9")) == gp.total_price.quantize(Decimal("1e-9"))


def test_long_context_tiers_are_valid_and_priced_by_prompt_size():
    """Sonnet 4.5 has a >200k-prompt price in genai-prices: a tier on the sum of the input keys."""
    import genai_prices
    from standin_models import ModelsAPI

    api = ModelsAPI()
    api.managed = []
    d = models.model_definition(models.lookup_prices("claude-sonnet-4-5-20250929"))
    status, answer = api.post(json.dumps(d).encode())
    assert status == 200, answer
    small = {"input": 1000, "output": 100, "cache_read_input_tokens": 150_000}
    big = {"input": 1000, "output": 100, "cache_read_input_tokens": 250_000}
    for u in (small, big):
        gp = genai_prices.calc_price(
            genai_prices.Usage(
                input_tokens=u["input"] + u["cache_read_input_tokens"], output_tokens=100, cache_read_tokens=u["cache_read_input_tokens"]
            ),
            "claude-sonnet-4-5-20250929",
        )
        assert api.cost("claude-sonnet-4-5-20250929", u)[0] == pytest.approx(float(gp.total_price), rel=1e-9)
    assert api.cost("claude-sonnet-4-5-20250929", big)[1].startswith("prompt > 200,000")


def test_local_cost_for_insights_is_the_cost_langfuse_computes(langfuse_standin, tmp_path, capsys):  # noqa: F811
    from claude_code_langfuse.insights import fact_from_record

    run_sync(settings_for(langfuse_standin, tmp_path / "state"), [projects(tmp_path, OPUS55)], capsys=capsys)
    for params in ({}, {"speed": "fast"}):
        assert models.local_cost(OPUS55, SAMPLE_USAGE, params) == pytest.approx(
            langfuse_standin.models.cost(OPUS55, SAMPLE_USAGE, params)[0]
        )
    gen = {
        "id": "g",
        "type": "generation",
        "name": OPUS55,
        "model": OPUS55,
        "start": "2026-12-01T00:00:00.000Z",
        "usage_details": SAMPLE_USAGE,
    }
    record = {
        "trace": {"id": "t" * 32, "session_id": "s", "metadata": {}},
        "observations": [{"id": "r", "type": "span", "start": "2026-12-01T00:00:00.000Z", "end": "2026-12-01T00:00:01.000Z"}, gen],
    }
    assert fact_from_record(record).generations[0].cost == pytest.approx(SAMPLE_COST)
    gen["metadata"] = {"speed": "fast"}  # a record queued before model parameters were sent
    assert fact_from_record(record).generations[0].cost == pytest.approx(SAMPLE_FAST_COST)
    gen["model_parameters"] = {"speed": "fast"}
    gen["metadata"] = {}
    assert fact_from_record(record).generations[0].cost == pytest.approx(SAMPLE_FAST_COST)


# ---------------------------------------------------------------------------- sync: which models, idempotent, dry run


def test_second_sync_creates_nothing(langfuse_standin, tmp_path, capsys):  # noqa: F811
    roots = [projects(tmp_path, OPUS55, "claude-opus-5", "claude-haiku-4-5-20251001")]
    s = settings_for(langfuse_standin, tmp_path / "state")
    assert run_sync(s, roots, capsys=capsys)[0] == 0
    assert [b["modelName"] for b in langfuse_standin.models.posted] == [OPUS55]  # the other two are priced already
    rc, out = run_sync(s, roots, capsys=capsys)
    assert rc == 0 and len(langfuse_standin.models.posted) == 1
    assert "0 definition(s) created" in out.out and f"ok       {OPUS55}" in out.out


def test_dry_run_prints_the_definitions_and_sends_nothing(langfuse_standin, tmp_path, capsys):  # noqa: F811
    rc, out = run_sync(settings_for(langfuse_standin, tmp_path / "state"), [projects(tmp_path, OPUS55)], dry_run=True, capsys=capsys)
    assert rc == 0
    assert langfuse_standin.models.posted == []
    assert f"would create (prices from genai-prices {models.price_source_version()})" in out.out
    assert (
        "Fast mode: input $8, output $40, cache_read_input_tokens $0.4, input_cache_creation_5m $10, input_cache_creation_1h $16" in out.out
    )
    assert "1 definition(s) would be created" in out.out


def test_models_from_the_queue_and_from_model_option(langfuse_standin, tmp_path, capsys):  # noqa: F811
    state = tmp_path / "state"
    state.mkdir()
    record = {"v": 1, "key": "turn:x", "trace": {"id": "x"}, "observations": [{"type": "generation", "model": "claude-fable-5"}]}
    (state / "pending_traces.jsonl").write_text(json.dumps(record) + "\n")
    rc, out = run_sync(
        settings_for(langfuse_standin, state), [tmp_path / "no-projects"], extra=["claude-sonnet-5", "no-such-model-1"], capsys=capsys
    )
    assert sorted(b["modelName"] for b in langfuse_standin.models.posted) == ["claude-fable-5", "claude-sonnet-5"]
    assert "no price no-such-model-1" in out.out  # genai-prices does not know it: said, never guessed
    assert rc == 0


def test_old_transcripts_and_synthetic_models_are_not_synced(langfuse_standin, tmp_path, capsys):  # noqa: F811
    root = projects(tmp_path, "claude-fable-5", "<synthetic>")
    old = root / "-home-dev-proj" / "session-0.jsonl"
    os.utime(old, (1, 1))  # changed in 1970: not recent
    rc, out = run_sync(settings_for(langfuse_standin, tmp_path / "state"), [root], capsys=capsys)
    assert rc == 0 and langfuse_standin.models.posted == []
    assert "no model seen" in out.out


def test_all_pages_of_the_server_list_are_read(langfuse_standin, tmp_path, capsys):  # noqa: F811
    """claude-opus-5's definition sits on page 3: a client reading one page would create a duplicate."""
    api = langfuse_standin.models
    api.managed = [_managed(f"aaa-model-{i:03d}", f"(?i)^aaa-model-{i:03d}$", {"input": 1e-6}) for i in range(230)] + api.managed
    rc, _ = run_sync(settings_for(langfuse_standin, tmp_path / "state"), [projects(tmp_path, "claude-opus-5")], capsys=capsys)
    assert rc == 0 and api.posted == []
    pages = [r.path for r in langfuse_standin.requests if r.path.startswith("/api/public/models")]
    assert pages == [f"/api/public/models?page={p}&limit=100" for p in (1, 2, 3)]


def test_a_project_model_of_that_name_that_does_not_match_blocks_and_says_why(langfuse_standin, tmp_path, capsys):  # noqa: F811
    api = langfuse_standin.models
    assert (
        api.post(json.dumps({"modelName": OPUS55, "matchPattern": "^opus-five$", "unit": "TOKENS", "inputPrice": 1e-6}).encode())[0] == 200
    )
    api.posted.clear()
    rc, out = run_sync(settings_for(langfuse_standin, tmp_path / "state"), [projects(tmp_path, OPUS55)], capsys=capsys)
    assert rc == 1 and api.posted == []
    assert "already has a model definition named 'claude-opus-5-5'" in out.out and "Settings > Models" in out.out


# ---------------------------------------------------------------------------- failures: nothing half done, said clearly


def test_wrong_keys_create_nothing_and_say_which_setting(langfuse_standin, tmp_path, capsys):  # noqa: F811
    rc, out = run_sync(
        settings_for(langfuse_standin, tmp_path / "state", secret="sk-lf-wrong"), [projects(tmp_path, OPUS55)], capsys=capsys
    )
    assert rc == 1 and langfuse_standin.models.posted == []
    assert "refused the keys (401)" in out.err and "CC_LANGFUSE_SECRET_KEY" in out.err


def test_unreachable_server_creates_nothing_and_says_so(langfuse_standin, tmp_path, capsys):  # noqa: F811
    s = settings_for(langfuse_standin, tmp_path / "state")
    langfuse_standin.stop()
    rc, out = run_sync(s, [projects(tmp_path, OPUS55)], capsys=capsys)
    assert rc == 1
    assert "is not reachable" in out.err and "nothing created" in out.err


def test_a_server_error_on_create_is_reported_and_the_next_run_retries(langfuse_standin, tmp_path, capsys):  # noqa: F811
    s = settings_for(langfuse_standin, tmp_path / "state")
    roots = [projects(tmp_path, OPUS55)]
    api = langfuse_standin.models
    real_post = api.post
    api.post = lambda raw: (500, {"message": "database unavailable"})
    rc, out = run_sync(s, roots, capsys=capsys)
    assert rc == 1 and "FAILED   claude-opus-5-5" in out.err and "answered 500: database unavailable" in out.err
    assert "models sync` again" in out.err
    api.post = real_post
    rc, out = run_sync(s, roots, capsys=capsys)
    assert rc == 0 and [d["modelName"] for d in api.own] == [OPUS55]


def test_without_genai_prices_the_command_says_how_to_install_it(langfuse_standin, tmp_path, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setitem(sys.modules, "genai_prices", None)  # import fails as if not installed
    rc, out = run_sync(settings_for(langfuse_standin, tmp_path / "state"), [projects(tmp_path, OPUS55)], capsys=capsys)
    assert rc == 1 and langfuse_standin.models.posted == []
    assert "genai-prices is not installed" in out.err and "pip install 'genai-prices" in out.err
    monkeypatch.setattr(models, "_PRICE_CACHE", {})
    assert models.local_cost(OPUS55, SAMPLE_USAGE) is None  # insights: no cost, no crash
    name, ok, detail = models.doctor_check(settings_for(langfuse_standin, tmp_path / "state"), roots=[str(tmp_path / "projects")])
    assert not ok and "genai-prices is not installed" in detail


# ---------------------------------------------------------------------------- doctor


def test_doctor_names_the_unpriced_models_and_the_command(langfuse_standin, tmp_path, capsys):  # noqa: F811
    roots = [projects(tmp_path, OPUS55, "claude-opus-5", "no-such-model-1")]
    s = settings_for(langfuse_standin, tmp_path / "state")
    name, ok, detail = models.doctor_check(s, roots=[str(r) for r in roots])
    assert not ok
    assert "no price for claude-opus-5-5, no-such-model-1" in detail and "models sync` to create claude-opus-5-5" in detail
    assert "genai-prices does not know no-such-model-1" in detail
    run_sync(s, roots, capsys=capsys)
    name, ok, detail = models.doctor_check(s, roots=[str(r) for r in roots])
    assert not ok and "claude-opus-5-5" not in detail  # synced; the unknown one is still named
    langfuse_standin.models.own.append(_managed("no-such-model-1", "(?i)^no-such-model-1$", {"input": 1e-6}) | {"isLangfuseManaged": False})
    assert models.doctor_check(s, roots=[str(r) for r in roots])[1]


def test_doctor_command_shows_the_check(langfuse_standin, tmp_path):  # noqa: F811
    home = tmp_path / "home"
    projects(home / ".claude", OPUS55)
    env = {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", ""),
        "CC_LANGFUSE_PUBLIC_KEY": langfuse_standin.public_key,
        "CC_LANGFUSE_SECRET_KEY": langfuse_standin.secret_key,
        "CC_LANGFUSE_BASE_URL": langfuse_standin.base_url,
        "CC_LANGFUSE_STATE_DIR": str(tmp_path / "state"),
        "CC_LANGFUSE_CONFIG": str(tmp_path / "none.json"),
    }
    r = subprocess.run(
        [sys.executable, "-I", str(REPO / "hooks" / "langfuse_hook.py"), "doctor"], env=env, capture_output=True, text=True, timeout=120
    )
    line = next((x for x in r.stdout.splitlines() if "models priced by the server" in x), "")
    assert line.strip().startswith("FAIL") and "claude-opus-5-5" in line and "models sync" in line, r.stdout + r.stderr
    r = subprocess.run(
        [sys.executable, "-I", str(REPO / "hooks" / "langfuse_hook.py"), "models", "sync"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "created (prices from genai-prices" in r.stdout
    r = subprocess.run(
        [sys.executable, "-I", str(REPO / "hooks" / "langfuse_hook.py"), "doctor"], env=env, capture_output=True, text=True, timeout=120
    )
    line = next((x for x in r.stdout.splitlines() if "models priced by the server" in x), "")
    assert line.strip().startswith("ok"), r.stdout
