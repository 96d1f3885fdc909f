"""The Langfuse stand-in's scores API: POST /api/public/scores (an `id` makes it an upsert, as in
Langfuse) and GET /api/public/v3/scores (name / traceId filters, fields=subject, cursor paging)."""

from __future__ import annotations

import base64
import datetime as _dt
import json
import threading
import uuid
from typing import Any
from urllib.parse import parse_qs

SCORES_PATH = "/api/public/scores"
SCORES_V3_PATH = "/api/public/v3/scores"
DATA_TYPES = ("NUMERIC", "BOOLEAN", "CATEGORICAL")


class ScoresAPI:
    def __init__(self) -> None:
        self.scores: dict[str, dict[str, Any]] = {}  # id -> stored score, in insertion order
        self.posts = 0  # every POST that was accepted (an upsert counts too)
        self.page_size = 100
        self._lock = threading.Lock()

    def post(self, raw: bytes) -> tuple[int, Any]:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return 400, {"message": "body is not JSON"}
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
            return 400, {"message": "name is required"}
        if not isinstance(body.get("traceId"), str) or not body["traceId"]:
            return 400, {"message": "traceId is required"}
        kind = body.get("dataType") or "NUMERIC"
        value = body.get("value")
        if kind not in DATA_TYPES:
            return 400, {"message": f"dataType {kind!r} is not supported"}
        if kind == "BOOLEAN" and value not in (0, 1):
            return 400, {"message": "a BOOLEAN score takes 0 or 1"}
        if kind in ("NUMERIC", "BOOLEAN") and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            return 400, {"message": "value must be a number"}
        sid = body.get("id") or str(uuid.uuid4())
        now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        with self._lock:
            old = self.scores.get(sid)
            self.scores[sid] = {
                "id": sid,
                "name": body["name"],
                "value": bool(value) if kind == "BOOLEAN" else value,
                "dataType": kind,
                "source": "API",
                "timestamp": old["timestamp"] if old else now,
                "comment": body.get("comment"),
                "metadata": body.get("metadata") or {},
                "traceId": body["traceId"],
            }
            self.posts += 1
        return 200, {"id": sid}

    def get(self, query: str) -> tuple[int, Any]:
        q = {k: v[-1] for k, v in parse_qs(query).items()}
        limit = int(q.get("limit") or 50)
        if limit > 100:
            return 400, {"message": "limit must be at most 100"}
        names = set(q["name"].split(",")) if q.get("name") else None
        traces = set(q["traceId"].split(",")) if q.get("traceId") else None
        with self._lock:
            rows = [
                s
                for s in self.scores.values()
                if (names is None or s["name"] in names)
                and (traces is None or s["traceId"] in traces)
                and (not q.get("fromTimestamp") or s["timestamp"] >= q["fromTimestamp"])
            ]
        start = int(base64.urlsafe_b64decode(q["cursor"]).decode()) if q.get("cursor") else 0
        page = rows[start : start + min(limit, self.page_size)]
        data = []
        for s in page:
            row = {k: s[k] for k in ("id", "name", "value", "dataType", "source", "timestamp")}
            if "subject" in (q.get("fields") or ""):
                row["subject"] = {"kind": "trace", "id": s["traceId"]}
            if "details" in (q.get("fields") or ""):
                row.update(comment=s["comment"], metadata=s["metadata"])
            data.append(row)
        end = start + len(page)
        meta = {"cursor": base64.urlsafe_b64encode(str(end).encode()).decode()} if end < len(rows) else {}
        return 200, {"data": data, "meta": meta}
