"""`models sync`: prices for the models Claude Code used, created as model definitions in the
user's Langfuse project; also what `doctor` and `insights --source local` know about prices.

The prices come from the `genai-prices` package (PyPI, maintained by Pydantic), never from a table
kept here. Langfuse prices a generation when one model definition's `matchPattern` (a regex,
case-insensitive) matches its model name: cost = sum over usage keys of units x price per unit;
pricing tiers (the first non-default tier, by priority, whose conditions all hold, else the
default tier) carry fast mode (`model_parameters.speed in ["fast"]`) and long-context prices.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .backfill import parse_since, projects_roots
from .config import HOOK_VERSION, Settings, display_url
from .files import Paths
from .runtime import PRICES_REQUIREMENT, self_command
from .store import queue_read

MODELS_PATH = "/api/public/models"

# usage_details key we send (docs/design.md, queue record) -> genai-prices price field (USD per MTok)
USAGE_PRICE_FIELDS = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cache_read_input_tokens": "cache_read_mtok",
    "input_cache_creation_5m": "cache_write_mtok",
    "input_cache_creation_1h": "cache_write_1h_mtok",
    "cache_creation_input_tokens": "cache_write_mtok",
}
FAST_CONDITION = {"source": "model_parameters", "key": "speed", "operator": "in", "values": ["fast"]}
# every input-side usage key we send contains "input": their sum is the prompt size long-context tiers look at
INPUT_KEYS_PATTERN = "input"
MILLION = Decimal(1_000_000)


class PriceSourceMissing(RuntimeError):
    """genai-prices is not importable in this interpreter."""


def price_source_advice() -> str:
    return f"the price source genai-prices is not installed in {sys.executable}: `{sys.executable} -m pip install '{PRICES_REQUIREMENT}'` (or rerun scripts/install-hook.sh)"


def _snapshot():
    try:
        from genai_prices import data_snapshot
    except ImportError as e:
        raise PriceSourceMissing(price_source_advice()) from e
    return data_snapshot.get_snapshot()


def price_source_version() -> str:
    try:
        from genai_prices import __version__

        return str(__version__)
    except ImportError:
        return ""


# ============================================================================ prices from genai-prices


@dataclass
class ModelPrices:
    """One model's prices, per MTok, keyed by the usage keys we send. A value is a Decimal or a
    genai-prices TieredPrices (base + tiers by prompt size)."""

    model: str  # the name Claude Code wrote
    source_id: str  # genai-prices model id
    source_name: str
    standard: dict[str, Any]
    fast: dict[str, Any] = field(default_factory=dict)  # only the keys fast mode changes


def lookup_prices(model: str, when=None) -> ModelPrices | None:
    """The prices genai-prices has for this model name (None: it does not know the model)."""
    import datetime as _dt

    snapshot = _snapshot()
    try:
        _provider, info = snapshot.find_provider_model(model, None, None, None)
    except LookupError:
        return None
    when = when or _dt.datetime.now(_dt.UTC)
    base = info.get_prices(when)
    standard = {k: getattr(base, f, None) for k, f in USAGE_PRICE_FIELDS.items()}
    standard = {k: v for k, v in standard.items() if v is not None}
    if not standard:
        return None
    fast: dict[str, Any] = {}
    for variant in info.price_variants or ():
        if variant.when != {"speed": "fast"}:
            continue  # batch processing etc.: Claude Code does not use them
        if variant.constraint is not None and not variant.constraint.active(when):
            continue
        for k, f in USAGE_PRICE_FIELDS.items():
            v = getattr(variant.prices, f, None)
            if v is not None and k in standard:
                fast.setdefault(k, v)
    return ModelPrices(model, info.id, info.name or info.id, standard, fast)


def _tiered(value) -> bool:
    return hasattr(value, "tiers") and hasattr(value, "base")


def _price_at(value, prompt_over: int | None) -> Decimal:
    """The per-MTok price of a Decimal or TieredPrices once the prompt is larger than `prompt_over`."""
    if not _tiered(value):
        return value
    price = value.base
    if prompt_over is not None:
        for tier in value.tiers:
            if tier.start <= prompt_over:
                price = tier.price
    return price


def _per_unit(mtok: Decimal) -> float:
    return float(mtok / MILLION)


def match_pattern(model: str) -> str:
    """Langfuse's style (see its default list): case-insensitive, whole name, optional provider prefix."""
    escaped = re.sub(r"([\\.^$*+?()\[\]{}|/])", r"\\\1", model)
    return f"(?i)^(anthropic\\/)?({escaped})$"


def model_definition(prices: ModelPrices) -> dict:
    """The POST /api/public/models body for one model: a default tier, a fast-mode tier, and
    long-context tiers where genai-prices has them (every tier with the same usage keys)."""
    thresholds = sorted(
        {t.start for v in list(prices.standard.values()) + list(prices.fast.values()) if _tiered(v) for t in v.tiers}, reverse=True
    )
    keys = list(prices.standard)

    def tier_prices(fast: bool, over: int | None) -> dict[str, float]:
        return {k: _per_unit(_price_at(prices.fast[k] if fast and k in prices.fast else prices.standard[k], over)) for k in keys}

    tiers = [{"name": "Standard", "isDefault": True, "priority": 0, "conditions": [], "prices": tier_prices(False, None)}]
    combos: list[tuple[bool, int | None]] = []
    if prices.fast:  # fast mode first: with a long prompt, then any prompt
        combos += [(True, t) for t in thresholds] + [(True, None)]
    combos += [(False, t) for t in thresholds]
    for priority, (fast, over) in enumerate(combos, start=1):
        conditions = []
        name = []
        if fast:
            conditions.append(dict(FAST_CONDITION, values=list(FAST_CONDITION["values"])))
            name.append("Fast mode")
        if over is not None:
            conditions.append({"usageDetailPattern": INPUT_KEYS_PATTERN, "operator": "gt", "value": over, "caseSensitive": False})
            name.append(f"prompt > {over:,} tokens")
        tiers.append(
            {"name": ", ".join(name), "isDefault": False, "priority": priority, "conditions": conditions, "prices": tier_prices(fast, over)}
        )
    return {
        "modelName": prices.model,
        "matchPattern": match_pattern(prices.model),
        "unit": "TOKENS",
        "tokenizerId": None,
        "pricingTiers": tiers,
    }


def local_cost(model: str, usage: dict | None, model_parameters: dict | None = None) -> float | None:
    """What Langfuse would charge for one generation under the definition `models sync` creates
    (None: no price known, or genai-prices missing). Used by `insights --source local`."""
    if not usage:
        return None
    try:
        prices = _cached_prices(model)
    except PriceSourceMissing:
        return None
    if prices is None:
        return None
    return cost_under_definition(model_definition(prices), usage, model_parameters or {})


_PRICE_CACHE: dict[str, ModelPrices | None] = {}


def _cached_prices(model: str) -> ModelPrices | None:
    if model not in _PRICE_CACHE:
        _PRICE_CACHE[model] = lookup_prices(model)
    return _PRICE_CACHE[model]


# ============================================================================ Langfuse's rules, for checks


def _condition_holds(cond: dict, usage: dict, model_parameters: dict) -> bool:
    if "usageDetailPattern" in cond:
        try:
            rx = re.compile(cond["usageDetailPattern"], 0 if cond.get("caseSensitive") else re.IGNORECASE)
        except re.error:
            return False
        total = sum(float(v or 0) for k, v in usage.items() if rx.search(k))
        value = cond.get("value", 0)
        return {
            "gt": total > value,
            "gte": total >= value,
            "lt": total < value,
            "lte": total <= value,
            "eq": total == value,
            "neq": total != value,
        }.get(cond.get("operator"), False)
    source = model_parameters if cond.get("source") == "model_parameters" else {}
    return str(source.get(cond.get("key"))) in [str(v) for v in cond.get("values") or []]


def tier_for(definition: dict, usage: dict, model_parameters: dict) -> dict | None:
    """Langfuse's tier choice: non-default tiers by priority, the first whose conditions all hold; else the default."""
    tiers = definition.get("pricingTiers") or []
    for tier in sorted((t for t in tiers if not t.get("isDefault")), key=lambda t: t.get("priority", 0)):
        conds = tier.get("conditions") or []
        if conds and all(_condition_holds(c, usage, model_parameters) for c in conds):
            return tier
    return next((t for t in tiers if t.get("isDefault")), None)


def cost_under_definition(definition: dict, usage: dict, model_parameters: dict) -> float:
    """usage x price per unit, summed over the usage keys the chosen tier prices."""
    tier = tier_for(definition, usage, model_parameters)
    if tier is None:  # a definition with flat prices only (as the API returns them)
        prices = {k: v.get("price") if isinstance(v, dict) else v for k, v in (definition.get("prices") or {}).items()}
    else:
        prices = tier.get("prices") or {}
    return sum(float(usage.get(k) or 0) * float(p) for k, p in prices.items() if p is not None)


def _compile_pattern(pattern: str):
    text = pattern or ""
    flags = re.IGNORECASE
    if text.startswith("(?i)"):
        text = text[4:]
    try:
        return re.compile(text, flags)
    except re.error:
        return None


def _has_prices(definition: dict) -> bool:
    if any(t.get("prices") for t in definition.get("pricingTiers") or []):
        return True
    if definition.get("prices"):
        return True
    return any(definition.get(k) is not None for k in ("inputPrice", "outputPrice", "totalPrice"))


def matching_definition(model: str, definitions: list[dict]) -> dict | None:
    """The definition Langfuse would use for this model name: matchPattern searched
    case-insensitively; the project's own definitions before Langfuse's, newest startDate first."""
    hits = []
    for d in definitions:
        rx = _compile_pattern(str(d.get("matchPattern") or ""))
        if rx is not None and rx.search(model):
            hits.append(d)
    hits.sort(key=lambda d: (bool(d.get("isLangfuseManaged")), -_start_ts(d.get("startDate"))))
    return hits[0] if hits else None


def _start_ts(value) -> float:
    """startDate as epoch seconds; none sorts last (as Langfuse: NULLS LAST)."""
    from .turns import parse_ts

    t = parse_ts(str(value)) if value else None
    return t.timestamp() if t else float("-inf")


def server_prices(model: str, definitions: list[dict]) -> bool:
    d = matching_definition(model, definitions)
    return d is not None and _has_prices(d)


# ============================================================================ the server


class ServerError(RuntimeError):
    def __init__(self, kind: str, message: str, status: int | None = None):
        super().__init__(message)
        self.kind = kind  # auth, unreachable, refused
        self.status = status


def _request(settings: Settings, method: str, path: str, body: dict | None = None) -> Any:
    import base64
    import urllib.error
    import urllib.request

    url = settings.base_url.rstrip("/") + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"User-Agent": f"claude-code-langfuse/{HOOK_VERSION}"})
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{settings.public_key}:{settings.secret_key}".encode()).decode())
    if data is not None:
        req.add_header("Content-Type", "application/json")
    where = display_url(settings.base_url)
    try:
        with urllib.request.urlopen(req, timeout=settings.timeout) as resp:
            text = resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        detail = (e.read(2000).decode("utf-8", "replace") if e.fp else "").strip()
        try:
            parsed = json.loads(detail)
            detail = str(parsed.get("message") or parsed.get("error") or detail) if isinstance(parsed, dict) else detail
        except ValueError:
            pass
        if e.code in (401, 403):
            raise ServerError(
                "auth",
                f"{where} refused the keys ({e.code}): check CC_LANGFUSE_PUBLIC_KEY / CC_LANGFUSE_SECRET_KEY ({settings.config_path})",
                e.code,
            ) from None
        raise ServerError("refused", f"{method} {path} answered {e.code}: {detail[:300]}", e.code) from None
    except (OSError, ValueError) as e:
        raise ServerError(
            "unreachable", f"{where} is not reachable ({getattr(e, 'reason', e)}): start the server or fix CC_LANGFUSE_BASE_URL"
        ) from None
    try:
        return json.loads(text) if text else {}
    except ValueError:
        raise ServerError("refused", f"{method} {path} answered something that is not JSON: {text[:200]}") from None


def list_definitions(settings: Settings, limit: int = 100) -> list[dict]:
    """Every model definition the project sees (its own and Langfuse's), all pages."""
    out: list[dict] = []
    page = 1
    while True:
        body = _request(settings, "GET", f"{MODELS_PATH}?page={page}&limit={limit}")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise ServerError("refused", f"GET {MODELS_PATH} answered without a data list")
        out.extend(d for d in data if isinstance(d, dict))
        meta = body.get("meta") or {}
        total_pages = int(meta.get("totalPages") or 0)
        if not data or page >= total_pages or page >= 1000:
            return out
        page += 1


def create_definition(settings: Settings, definition: dict) -> dict:
    return _request(settings, "POST", MODELS_PATH, definition)


# ============================================================================ which models were used


def _models_in_line(data: dict, into: dict[str, float], mtime: float) -> None:
    msg = data.get("message")
    if data.get("type") == "assistant" and isinstance(msg, dict):
        model = msg.get("model")
        if isinstance(model, str) and model and not model.startswith("<") and len(model) <= 200:
            into[model] = max(into.get(model, 0.0), mtime)


def seen_models(settings: Settings, since: str | None = "30d", roots: list[str] | None = None) -> dict[str, float]:
    """Model names in transcripts changed within `since` (main and subagent files, the roots
    backfill reads) and in the queue -> newest time seen (epoch seconds)."""
    cutoff = parse_since(since) or 0.0
    found: dict[str, float] = {}
    for root in roots if roots is not None else projects_roots():
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                if not name.endswith(".jsonl"):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    mtime = os.stat(path).st_mtime
                    if mtime < cutoff:
                        continue
                    with open(path, "rb") as f:
                        for line in f:
                            if b'"model"' not in line or b'"assistant"' not in line:
                                continue
                            try:
                                data = json.loads(line)
                            except ValueError:
                                continue
                            if isinstance(data, dict):
                                _models_in_line(data, found, mtime)
                except OSError:
                    continue
    for entry in queue_read(Paths(settings.state_dir).queue):
        for o in (entry.record or {}).get("observations") or []:
            model = o.get("model") if isinstance(o, dict) else None
            if isinstance(model, str) and model and not model.startswith("<"):
                found[model] = max(found.get(model, 0.0), time.time())
    return found


# ============================================================================ sync


@dataclass
class SyncPlan:
    create: list[dict] = field(default_factory=list)  # definitions to POST
    priced: list[str] = field(default_factory=list)  # the server prices these already
    unknown: list[str] = field(default_factory=list)  # genai-prices has no price
    blocked: list[tuple[str, str]] = field(default_factory=list)  # (model, why it cannot be created)


def plan_sync(models: list[str], definitions: list[dict]) -> SyncPlan:
    plan = SyncPlan()
    own_names = {str(d.get("modelName")): d for d in definitions if not d.get("isLangfuseManaged")}
    for model in sorted(set(models)):
        if server_prices(model, definitions):
            plan.priced.append(model)
            continue
        prices = lookup_prices(model)
        if prices is None:
            plan.unknown.append(model)
            continue
        if model in own_names:
            d = own_names[model]
            plan.blocked.append(
                (
                    model,
                    f"the project already has a model definition named {model!r} (pattern {d.get('matchPattern')!r}) that does not price it: "
                    "edit or delete it in Langfuse (Settings > Models), then run this again",
                )
            )
            continue
        plan.create.append(model_definition(prices))
    return plan


def describe_definition(d: dict) -> str:
    lines = [f"  {d['modelName']}  matchPattern {d['matchPattern']}"]
    for tier in d["pricingTiers"]:
        per_m = ", ".join(f"{k} ${round(v * 1e6, 6):g}" for k, v in tier["prices"].items())
        lines.append(f"      {tier['name']}: {per_m} per MTok")
    return "\n".join(lines)


def cmd_models_sync(settings: Settings, dry_run: bool, extra: list[str], since: str | None, roots: list[str] | None = None) -> int:
    try:
        _snapshot()
    except PriceSourceMissing as e:
        print(f"models sync: {e}", file=sys.stderr)
        return 1
    if not settings.has_keys:
        print("models sync: no Langfuse keys configured (CC_LANGFUSE_PUBLIC_KEY / CC_LANGFUSE_SECRET_KEY)", file=sys.stderr)
        return 1
    try:
        models = sorted(set(seen_models(settings, since, roots)) | set(extra))
    except ValueError as e:
        print(f"models sync: {e}", file=sys.stderr)
        return 2
    if not models:
        print(f"models sync: no model seen in transcripts of the last {since} or in the queue; name one with --model")
        return 0
    try:
        definitions = list_definitions(settings)
    except ServerError as e:
        print(f"models sync: nothing created: {e}", file=sys.stderr)
        return 1
    plan = plan_sync(models, definitions)
    src = f"genai-prices {price_source_version()}"
    for model in plan.priced:
        print(f"  ok       {model}: the server prices it already")
    for model in plan.unknown:
        print(f"  no price {model}: {src} does not know it (upgrade genai-prices, or add it in Langfuse under Settings > Models)")
    for model, why in plan.blocked:
        print(f"  blocked  {model}: {why}")
    if dry_run:
        for d in plan.create:
            print(f"  would create (prices from {src}):\n{describe_definition(d)}")
        print(f"models sync --dry-run: {len(plan.create)} definition(s) would be created in {display_url(settings.base_url)}; nothing sent")
        return 0
    created = 0
    failed: list[str] = []
    for d in plan.create:
        try:
            create_definition(settings, d)
        except ServerError as e:
            failed.append(d["modelName"])
            print(f"  FAILED   {d['modelName']}: {e}", file=sys.stderr)
            if e.kind in ("auth", "unreachable"):
                break
            continue
        created += 1
        print(f"  created (prices from {src}):\n{describe_definition(d)}")
    not_tried = len(plan.create) - created - len(failed)
    print(
        f"models sync: {created} definition(s) created in {display_url(settings.base_url)}"
        + (f", {len(failed)} failed" if failed else "")
        + (f", {not_tried} not tried" if not_tried else "")
        + ("; generations sent from now on get a cost (earlier ones keep theirs)" if created else "")
    )
    if failed or not_tried:
        print(f"run `{self_command()} models sync` again once the problem above is fixed", file=sys.stderr)
        return 1
    return 1 if plan.blocked else 0


def doctor_check(settings: Settings, roots: list[str] | None = None) -> tuple[str, bool, str] | None:
    """doctor: models seen in recent transcripts the server cannot price (None: nothing to check)."""
    models = sorted(seen_models(settings, "30d", roots))
    if not models:
        return None
    try:
        definitions = list_definitions(settings)
    except ServerError as e:
        return ("models priced by the server", False, f"cannot list the server's model definitions: {e}")
    missing = [m for m in models if not server_prices(m, definitions)]
    if not missing:
        return ("models priced by the server", True, f"{len(models)} model(s) seen in the last 30 days, all priced")
    detail = f"the server has no price for {', '.join(missing)} (their generations show no cost)"
    try:
        known = [m for m in missing if lookup_prices(m) is not None]
    except PriceSourceMissing:
        return ("models priced by the server", False, f"{detail}; {price_source_advice()}, then run `{self_command()} models sync`")
    unknown = [m for m in missing if m not in known]
    if known:
        detail += f"; run `{self_command()} models sync` to create {', '.join(known)} with genai-prices' prices"
    if unknown:
        detail += f"; genai-prices does not know {', '.join(unknown)}: add {'it' if len(unknown) == 1 else 'them'} in Langfuse (Settings > Models)"
    return ("models priced by the server", False, detail)
