"""The stand-in's Langfuse models API: GET/POST /api/public/models, and Langfuse's pricing rules.

Shapes and checks follow Langfuse's source (web/src/features/public-api/types/models.ts,
web/src/features/models/server/publicApiModelService.ts, packages/shared pricing-tier validation and
matcher): GET answers `{"data": [...], "meta": {page, limit, totalItems, totalPages}}` with the
project's own definitions and Langfuse's managed ones; POST validates the body like the server
(flat prices XOR pricing tiers, one default tier with priority 0 and no conditions, unique
priorities and names, every tier the same usage keys, conditions either on usage or on
model_parameters/metadata, a valid matchPattern, no second definition with the same modelName in
the project) and answers the created definition.

`cost()` prices one generation the way Langfuse does, written apart from the hook's own code so a
test can hold the two against each other: the matching definition (matchPattern searched
case-insensitively; the project's own before Langfuse's), its tier (non-default tiers by priority,
the first whose conditions all hold, else the default), then usage x price per unit.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from typing import Any

MODELS_PATH = "/api/public/models"
UNITS = {"TOKENS", "CHARACTERS", "MILLISECONDS", "SECONDS", "REQUESTS", "IMAGES"}
OPERATORS = {"gt", "gte", "lt", "lte", "eq", "neq"}
CREATED_AT = "2026-08-22T00:00:00.000Z"


def _managed(name: str, pattern: str, prices: dict[str, float], fast: dict[str, float] | None = None) -> dict[str, Any]:
    mid = "lf-" + name
    tiers = [{"id": f"{mid}_tier_default", "name": "Standard", "isDefault": True, "priority": 0, "conditions": [], "prices": prices}]
    if fast:
        cond = {"source": "model_parameters", "key": "speed", "operator": "in", "values": ["fast"]}
        tiers.append(
            {"id": f"{mid}_tier_fast", "name": "Fast mode", "isDefault": False, "priority": 1, "conditions": [cond], "prices": fast}
        )
    return _response_shape(
        mid, {"modelName": name, "matchPattern": pattern, "unit": "TOKENS", "tokenizerId": "claude"}, tiers, managed=True
    )


def _claude(input_: float, output: float, read: float, w5: float, w1h: float) -> dict[str, float]:
    m = 1e-6
    return {
        "input": input_ * m,
        "output": output * m,
        "cache_read_input_tokens": read * m,
        "input_cache_creation_5m": w5 * m,
        "input_cache_creation_1h": w1h * m,
        "cache_creation_input_tokens": w5 * m,
    }


def default_managed_models() -> list[dict[str, Any]]:
    """A few of Langfuse 4.16's built-in definitions (exact-name patterns, as there): claude-opus-5
    is priced, claude-opus-5-5 (Claude Code 2.1.328's default) is not."""
    return [
        _managed("claude-opus-5", r"(?i)^(anthropic\/)?(claude-opus-5)$", _claude(5, 25, 0.5, 6.25, 10), _claude(10, 50, 1, 12.5, 20)),
        _managed(
            "claude-sonnet-4-5-20250929",
            r"(?i)^(anthropic\/)?(claude-sonnet-4-5(-20250929)?|(eu\.|us\.|apac\.)?anthropic\.claude-sonnet-4-5-20250929-v1:0)$",
            _claude(3, 15, 0.3, 3.75, 6),
        ),
        _managed("claude-haiku-4-5-20251001", r"(?i)^(anthropic\/)?(claude-haiku-4-5(-20251001)?)$", _claude(1, 5, 0.1, 1.25, 2)),
        _managed("gpt-4o", r"(?i)^(openai\/)?(gpt-4o)$", {"input": 2.5e-6, "output": 1e-5}),
    ]


def _response_shape(mid: str, body: dict[str, Any], tiers: list[dict[str, Any]], managed: bool) -> dict[str, Any]:
    default = next((t for t in tiers if t["isDefault"]), {"prices": {}})
    flat = default["prices"]
    return {
        "id": mid,
        "modelName": body["modelName"],
        "matchPattern": body["matchPattern"],
        "startDate": body.get("startDate"),
        "inputPrice": flat.get("input"),
        "outputPrice": flat.get("output"),
        "totalPrice": flat.get("total"),
        "unit": body.get("unit"),
        "tokenizerId": body.get("tokenizerId"),
        "tokenizerConfig": body.get("tokenizerConfig"),
        "isLangfuseManaged": managed,
        "createdAt": CREATED_AT,
        "prices": {k: {"price": v} for k, v in flat.items()},
        "pricingTiers": tiers,
    }


def _python_regex(pattern: str):
    text = pattern[4:] if pattern.startswith("(?i)") else pattern
    return re.compile(text, re.IGNORECASE)


class ModelsAPI:
    """State of the models endpoints: Langfuse's managed definitions, the project's own, what was posted."""

    def __init__(self) -> None:
        self.managed: list[dict[str, Any]] = default_managed_models()
        self.own: list[dict[str, Any]] = []  # the project's definitions, response shape
        self.posted: list[dict[str, Any]] = []  # every POST body, as sent (accepted or not)
        self.rejected: list[tuple[dict[str, Any], str]] = []
        self.max_limit = 100  # Langfuse's most rows per page; tests lower it to force paging
        self.fail_status: int | None = None  # answer every models request with this status
        self._lock = threading.Lock()

    # -- endpoints
    def get(self, query: str) -> tuple[int, Any]:
        from urllib.parse import parse_qs

        if self.fail_status:
            return self.fail_status, {"message": f"scripted HTTP {self.fail_status}"}
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        try:
            page = int(params.get("page", 1))
            limit = int(params.get("limit", 50))
        except ValueError:
            return 400, {"message": "page and limit must be integers"}
        if page < 1 or limit < 1 or limit > self.max_limit:
            return 400, {"message": f"page >= 1 and 1 <= limit <= {self.max_limit}"}
        with self._lock:
            rows = sorted(self.own + self.managed, key=lambda d: (d["modelName"], d["unit"] or ""))
        total = len(rows)
        return 200, {
            "data": rows[(page - 1) * limit : page * limit],
            "meta": {"page": page, "limit": limit, "totalItems": total, "totalPages": -(-total // limit)},
        }

    def post(self, raw: bytes) -> tuple[int, Any]:
        if self.fail_status:
            return self.fail_status, {"message": f"scripted HTTP {self.fail_status}"}
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            return 400, {"message": "Invalid JSON body"}
        self.posted.append(body)
        error = self._validate(body)
        with self._lock:
            if error is None and any(d["modelName"] == body["modelName"] for d in self.own):
                error = f"Model name '{body['modelName']}' already exists in project"
            if error is not None:
                self.rejected.append((body, error))
                return 400, {"message": error}
            mid = uuid.uuid4().hex[:25]
            if body.get("pricingTiers"):
                tiers = [
                    {
                        "id": f"{mid}_tier_default" if t.get("isDefault") else uuid.uuid4().hex[:25],
                        "name": t["name"].strip(),
                        "isDefault": bool(t.get("isDefault", False)),
                        "priority": t["priority"],
                        "conditions": [self._condition_defaults(c) for c in t["conditions"]],
                        "prices": dict(t["prices"]),
                    }
                    for t in body["pricingTiers"]
                ]
            else:
                flat = {k: body[f"{k}Price"] for k in ("input", "output", "total") if body.get(f"{k}Price") is not None}
                tiers = [
                    {"id": f"{mid}_tier_default", "name": "Standard", "isDefault": True, "priority": 0, "conditions": [], "prices": flat}
                ]
            created = _response_shape(mid, body, tiers, managed=False)
            self.own.append(created)
        return 200, created

    @staticmethod
    def _condition_defaults(c: dict[str, Any]) -> dict[str, Any]:
        return {**c, "caseSensitive": c.get("caseSensitive", False)} if "usageDetailPattern" in c else dict(c)

    # -- validation (PostModelsV1Body + validatePricingTiers)
    def _validate(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            return "body must be a JSON object"
        for key in ("modelName", "matchPattern"):
            if not isinstance(body.get(key), str):
                return f"{key}: Required string"
        if body.get("unit") not in UNITS:
            return f"unit: must be one of {sorted(UNITS)}"
        if body.get("tokenizerId") not in (None, "openai", "claude"):
            return "tokenizerId: must be openai, claude or null"
        for key in ("inputPrice", "outputPrice", "totalPrice"):
            v = body.get(key)
            if v is not None and (not _number(v) or v < 0):
                return f"{key}: must be a non-negative number"
        has_flat = any(body.get(k) is not None for k in ("inputPrice", "outputPrice", "totalPrice"))
        tiers = body.get("pricingTiers")
        if tiers is not None and not isinstance(tiers, list):
            return "pricingTiers: must be a list"
        has_tiers = bool(tiers)
        if has_flat and has_tiers:
            return "Must provide either flat prices (inputPrice/outputPrice/totalPrice) OR pricingTiers, not both"
        if not has_flat and not has_tiers:
            return "Must provide either flat prices (inputPrice/outputPrice/totalPrice) OR pricingTiers"
        if has_flat and (body.get("inputPrice") is not None or body.get("outputPrice") is not None) and body.get("totalPrice") is not None:
            return "If input and/or output price is set, total price must be null"
        if has_tiers:
            error = _validate_tiers(tiers)
            if error:
                return error
        try:
            _python_regex(body["matchPattern"])
        except re.error:
            return "matchPattern is not a valid regex pattern (Postgres)"
        return None

    # -- Langfuse's pricing rules
    def definitions(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.own) + list(self.managed)

    def matching(self, model: str) -> dict[str, Any] | None:
        hits = [d for d in self.definitions() if _python_regex(d["matchPattern"]).search(model)]
        hits.sort(key=lambda d: d["isLangfuseManaged"])  # the project's own first
        return hits[0] if hits else None

    def cost(self, model: str, usage: dict[str, int], model_parameters: dict[str, Any] | None = None) -> tuple[float, str] | None:
        """(USD, tier name) Langfuse would compute for one generation; None when nothing matches."""
        d = self.matching(model)
        if d is None:
            return None
        params = model_parameters or {}
        chosen = None
        for tier in sorted((t for t in d["pricingTiers"] if not t["isDefault"]), key=lambda t: t["priority"]):
            if tier["conditions"] and all(_holds(c, usage, params) for c in tier["conditions"]):
                chosen = tier
                break
        chosen = chosen or next(t for t in d["pricingTiers"] if t["isDefault"])
        return sum(units * chosen["prices"].get(key, 0.0) for key, units in usage.items()), chosen["name"]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _validate_condition(c: Any) -> str | None:
    if not isinstance(c, dict):
        return "condition must be an object"
    if "usageDetailPattern" in c:
        p = c["usageDetailPattern"]
        if not isinstance(p, str) or not 1 <= len(p) <= 200:
            return "usageDetailPattern: 1 to 200 characters"
        try:
            re.compile(p)
        except re.error:
            return "Invalid regex pattern: must be valid regex and not cause catastrophic backtracking"
        if c.get("operator") not in OPERATORS:
            return f"operator: one of {sorted(OPERATORS)}"
        if not _number(c.get("value")) or c["value"] < 0:
            return "value: non-negative number"
        if not isinstance(c.get("caseSensitive", False), bool):
            return "caseSensitive: boolean"
        return None
    if c.get("source") not in ("model_parameters", "metadata"):
        return "condition: a usage condition (usageDetailPattern) or an attribute condition (source model_parameters|metadata)"
    if not isinstance(c.get("key"), str) or not 1 <= len(c["key"]) <= 200:
        return "key: 1 to 200 characters"
    if c.get("operator") != "in":
        return "operator: attribute conditions take 'in'"
    values = c.get("values")
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
        return "values: a non-empty list of non-empty strings"
    return None


def _validate_tiers(tiers: list[Any]) -> str | None:
    for t in tiers:
        if not isinstance(t, dict):
            return "pricing tier must be an object"
        if not isinstance(t.get("name"), str) or not 1 <= len(t["name"].strip()) <= 100:
            return "Name cannot be empty (at most 100 characters)"
        if not isinstance(t.get("isDefault", False), bool):
            return "isDefault: boolean"
        if not isinstance(t.get("priority"), int) or isinstance(t.get("priority"), bool) or not 0 <= t["priority"] <= 999:
            return "Priority must be an integer from 0 to 999"
        if not isinstance(t.get("conditions"), list):
            return "conditions: Required list"
        for c in t["conditions"]:
            error = _validate_condition(c)
            if error:
                return error
        prices = t.get("prices")
        if not isinstance(prices, dict) or not all(isinstance(k, str) and _number(v) and v >= 0 for k, v in prices.items()):
            return "prices: a record of non-negative numbers"
    defaults = [t for t in tiers if t.get("isDefault")]
    if not defaults:
        return "Exactly one pricing tier must have isDefault: true"
    if len(defaults) > 1:
        return f"Only one pricing tier can have isDefault: true, found {len(defaults)}"
    if defaults[0]["priority"] != 0:
        return "Default pricing tier must have priority: 0"
    if defaults[0]["conditions"]:
        return "Default pricing tier must have empty conditions array"
    for t in tiers:
        if not t.get("isDefault") and not t["conditions"]:
            return f'Non-default pricing tier "{t["name"]}" must have at least one condition'
    if len({t["priority"] for t in tiers}) != len(tiers):
        return "Pricing tier priorities must be unique within a model"
    if len({t["name"].strip() for t in tiers}) != len(tiers):
        return "Pricing tier names must be unique"
    for t in tiers:
        if not t["prices"]:
            return f'Pricing tier "{t["name"]}" must have at least one price defined'
    keys = sorted(defaults[0]["prices"])
    for t in tiers:
        if sorted(t["prices"]) != keys:
            return f'Pricing tier "{t["name"]}" must have the same usage keys as the default tier'
    return None


def _holds(c: dict[str, Any], usage: dict[str, int], params: dict[str, Any]) -> bool:
    if "usageDetailPattern" in c:
        rx = re.compile(c["usageDetailPattern"], 0 if c.get("caseSensitive") else re.IGNORECASE)
        total = sum(v for k, v in usage.items() if rx.search(k))
        return {
            "gt": total > c["value"],
            "gte": total >= c["value"],
            "lt": total < c["value"],
            "lte": total <= c["value"],
            "eq": total == c["value"],
            "neq": total != c["value"],
        }[c["operator"]]
    source = params if c["source"] == "model_parameters" else {}
    return str(source.get(c["key"])) in c["values"]
