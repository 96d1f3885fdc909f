"""The queue -> Langfuse: oldest first, a record leaves only once accepted; back-off, dead letters and the sender status file."""

from __future__ import annotations

import json
import os
import sys
import time

from .config import Settings, display_url
from .files import Paths, read_json_file, write_atomic
from .runtime import key_fingerprint as runtime_key_fingerprint
from .store import now_iso, queue_read, queue_remove

# ============================================================================ sender loop

AUTH_ADVICE = (
    "Langfuse rejected the keys: check CC_LANGFUSE_PUBLIC_KEY / CC_LANGFUSE_SECRET_KEY (config file {config}) "
    "match an API key of the project at {url}; the queue is kept and resumes by itself once they work"
)
RETRY_ADVICE = "Langfuse at {url} is not accepting traces right now ({detail}); the queue is kept and retried with backoff. Is the server up? `docker compose ps`"
DEAD_ADVICE = "{detail} Moved to {dead}; `drain --retry-dead` tries again"
NOKEYS_ADVICE = (
    "no Langfuse keys configured: run scripts/install-hook.sh or set CC_LANGFUSE_PUBLIC_KEY / CC_LANGFUSE_SECRET_KEY; the queue is kept"
)
NOSDK_ADVICE = (
    "the langfuse SDK is not importable by {python}: rerun scripts/install-hook.sh (it creates ~/.claude/langfuse/venv); the queue is kept"
)


FIRST_BACKOFF_S = 5.0
MAX_BACKOFF_S = 300.0


def key_fingerprint(settings: Settings) -> str:
    return runtime_key_fingerprint(settings.public_key, settings.secret_key, settings.base_url)


class DrainSummary:
    def __init__(self) -> None:
        self.sent = self.dead = self.kept = self.corrupt = 0
        self.stopped_by = ""  # "", "auth", "retry", "nokeys", "nosdk"
        self.detail = ""


def reachable(base_url: str, timeout: float = 1.5) -> tuple[bool, str]:
    """A TCP connect to the server: cheap, and enough to skip a doomed SDK start."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    host = parts.hostname or "localhost"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as e:
        return False, f"cannot connect to {host}:{port}: {e.strerror or e}"


def update_sender_status(paths: Paths, **changes) -> dict:
    status = read_json_file(paths.sender_status, {})
    if not isinstance(status, dict):
        status = {}
    status.update(changes)
    try:
        write_atomic(paths.sender_status, json.dumps(status, ensure_ascii=False, indent=1).encode())
    except OSError:
        pass
    return status


def _record_failure(paths: Paths, settings: Settings, kind: str, http_status, detail: str, advice: str, log) -> None:
    status = read_json_file(paths.sender_status, {}) if os.path.exists(paths.sender_status) else {}
    failures = int((status or {}).get("consecutive_failures") or 0) + 1
    wait = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (failures - 1))
    if kind in ("nokeys", "nosdk"):
        wait = 0.0  # not the server's fault: the next run (perhaps another interpreter) may try at once
    update_sender_status(
        paths,
        last_attempt=now_iso(),
        last_attempt_epoch=time.time(),
        consecutive_failures=failures,
        next_attempt_epoch=time.time() + wait,
        auth_failed_keys=key_fingerprint(settings) if kind == "auth" else None,
        last_error={"time": now_iso(), "kind": kind, "http_status": http_status, "detail": detail, "advice": advice},
    )
    log.error("%s", advice)


def drain_queue(settings: Settings, log, progress=None, keep_going=None) -> DrainSummary:
    """Send the queue oldest first; a record leaves the queue only after the server accepted it.

    keep_going() is asked between records: False stops early (the worker is handing over).
    """
    paths = Paths(settings.state_dir)
    summary = DrainSummary()
    entries = queue_read(paths.queue)
    dead: list[dict] = []
    done: dict[str, str] = {}
    for e in entries:
        if e.record is None and e.error != "incomplete last line":
            dead.append({"dead_at": now_iso(), "reason": e.error, "raw": e.raw.decode("utf-8", "replace")})
            summary.corrupt += 1
    latest: dict[str, dict] = {}
    for e in entries:
        if e.record is not None:
            seen = latest.get(e.record["key"])
            if seen is None or (e.record.get("queued_at") or "") >= (seen.get("queued_at") or ""):
                latest[e.record["key"]] = e.record  # the newest version of a turn is the one Langfuse must end with
    order = sorted(latest.values(), key=lambda r: r.get("queued_at") or "")
    if summary.corrupt:
        log.error("moved %d corrupt queue line(s) to %s; the rest of the queue is unaffected", summary.corrupt, paths.dead)
    if not order:
        queue_remove(paths, done, dead)
        return summary
    if not settings.has_keys:
        summary.stopped_by, summary.kept = "nokeys", len(order)
        _record_failure(paths, settings, "nokeys", None, "no keys", NOKEYS_ADVICE, log)
        queue_remove(paths, done, dead)
        return summary
    ok, why = reachable(settings.base_url)
    if not ok:
        summary.stopped_by, summary.kept, summary.detail = "retry", len(order), why
        _record_failure(paths, settings, "retry", None, why, RETRY_ADVICE.format(url=display_url(settings.base_url), detail=why), log)
        queue_remove(paths, done, dead)
        return summary
    try:
        from .sender import open_sender  # the SDK and OpenTelemetry load only when there is something to send

        sender = open_sender(settings)
    except ImportError as e:
        summary.stopped_by, summary.kept, summary.detail = "nosdk", len(order), str(e)
        _record_failure(paths, settings, "nosdk", None, str(e), NOSDK_ADVICE.format(python=sys.executable), log)
        queue_remove(paths, done, dead)
        return summary
    last_commit, commit_cost = time.monotonic(), 0.0
    try:
        for i, record in enumerate(order):
            delivery = sender.send(record)
            if delivery.outcome == "accepted":
                done[record["key"]] = record.get("rev", "")
                summary.sent += 1
            elif delivery.outcome == "dead":
                done[record["key"]] = record.get("rev", "")
                dead.append({"dead_at": now_iso(), "reason": delivery.detail, "http_status": delivery.http_status, "record": record})
                summary.dead += 1
                log.error("%s", DEAD_ADVICE.format(detail=delivery.detail, dead=paths.dead))
            else:
                summary.stopped_by, summary.detail = delivery.outcome, delivery.detail
                summary.kept = len(order) - i
                if delivery.outcome == "auth":
                    advice = AUTH_ADVICE.format(config=settings.config_path, url=display_url(settings.base_url))
                else:
                    advice = RETRY_ADVICE.format(url=display_url(settings.base_url), detail=delivery.detail)
                _record_failure(paths, settings, delivery.outcome, delivery.http_status, delivery.detail, advice, log)
                break
            if progress:
                progress(i + 1, len(order), summary)
            if keep_going is not None and i + 1 < len(order) and not keep_going():
                summary.kept = len(order) - i - 1
                break
            # Rewriting the queue holds the lock hooks append under: with a big backlog, commit
            # rarely enough that hooks wait at most ~5 % of the time (a crash only means resends).
            if time.monotonic() - last_commit > max(1.0, 20 * commit_cost):
                t0 = time.monotonic()
                queue_remove(paths, done, dead)
                commit_cost = time.monotonic() - t0
                done, dead = {}, []
                last_commit = time.monotonic()
    finally:
        try:
            sender.close()
        except Exception as e:  # closing must not lose the bookkeeping below
            log.warning("closing the Langfuse client failed: %s", e)
        queue_remove(paths, done, dead)
    if summary.sent or summary.dead:
        changes: dict = {"last_attempt": now_iso(), "last_attempt_epoch": time.time()}
        if summary.sent:
            changes.update(
                last_success=now_iso(),
                sent_total=int((read_json_file(paths.sender_status, {}) or {}).get("sent_total") or 0) + summary.sent,
            )
        if not summary.stopped_by:
            changes.update(consecutive_failures=0, next_attempt_epoch=0, auth_failed_keys=None, last_error=None)
        update_sender_status(paths, **changes)
    return summary
