"""The queue -> Langfuse: newest first, a record leaves only once accepted; back-off, dead letters and the sender status file."""

from __future__ import annotations

import json
import os
import sys
import time

from .config import Settings, display_url
from .files import Paths, access_advice, write_atomic
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
        self.yielded = False  # stopped early for newer records (yield_to_newer): call again at once


# ============================================================================ the way to the server

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21, "socks5": 1080, "socks5h": 1080}


def _split(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) as httpx normalises them: lowercase host without IPv6 brackets, the
    scheme's default port as None. ValueError for what is not a URL."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port  # ValueError on a bad port
    scheme = parts.scheme.lower()
    if port is not None and _DEFAULT_PORTS.get(scheme) == port and scheme not in ("socks5", "socks5h"):
        port = None
    return scheme, (parts.hostname or ""), port


class _ProxyRule:
    """One entry of httpx's proxy map (httpx._utils.URLPattern, re-stated with the standard library)."""

    def __init__(self, pattern: str, proxy: str | None):
        import re

        self.proxy = proxy
        scheme, host, port = _split(pattern)
        self.scheme = "" if scheme == "all" else scheme
        self.host = "" if host == "*" else host
        self.port = port
        if not host or host == "*":
            self.regex = None
        elif host.startswith("*."):
            self.regex = re.compile(f"^.+\\.{re.escape(host[2:])}$")
        elif host.startswith("*"):
            self.regex = re.compile(f"^(.+\\.)?{re.escape(host[1:])}$")
        else:
            self.regex = re.compile(f"^{re.escape(host)}$")

    def matches(self, scheme: str, host: str, port: int | None) -> bool:
        if self.scheme and self.scheme != scheme:
            return False
        if self.host and self.regex is not None and not self.regex.match(host):
            return False
        return self.port is None or self.port == port

    @property
    def priority(self) -> tuple[int, int, int]:
        return (0 if self.port is not None else 1, -len(self.host), -len(self.scheme))


def proxy_for(url: str) -> str | None:
    """The proxy the sender's HTTP client (httpx, trust_env) goes through for `url`, or None for a
    direct connection: the same environment (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY, upper or
    lower case, read by urllib's getproxies as httpx reads them) and the same matching rules
    (httpx._utils.get_environment_proxies and URLPattern; tests/test_proxy.py holds us to them)."""
    from urllib.request import getproxies

    found = getproxies()
    rules: list[_ProxyRule] = []

    def add(pattern: str, proxy: str | None) -> None:
        try:
            rules.append(_ProxyRule(pattern, proxy))
        except ValueError:
            pass  # an entry httpx cannot parse either (its client would refuse to start)

    for scheme in ("http", "https", "all"):
        if found.get(scheme):
            value = found[scheme]
            add(f"{scheme}://", value if "://" in value else f"http://{value}")
    for entry in (h.strip() for h in found.get("no", "").split(",")):
        if entry == "*":
            return None
        if not entry:
            continue
        if "://" in entry:
            add(entry, None)
        elif _is_ip(entry, 4):
            add(f"all://{entry}", None)
        elif _is_ip(entry, 6):
            add(f"all://[{entry}]", None)
        elif entry.lower() == "localhost":
            add(f"all://{entry}", None)
        else:
            add(f"all://*{entry}", None)
    try:
        target = _split(url)
    except ValueError:
        return None
    for rule in sorted(rules, key=lambda r: r.priority):  # stable: ties keep httpx's insertion order
        if rule.matches(*target):
            return rule.proxy
    return None


def _is_ip(text: str, version: int) -> bool:
    import ipaddress

    try:
        (ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address)(text.split("/")[0])
    except ValueError:
        return False
    return True


def server_address(base_url: str) -> tuple[str, int, str]:
    """(host, port, what) of the first hop to the server: the proxy when one applies, else the server."""
    from urllib.parse import urlsplit

    proxy = proxy_for(base_url)
    parts = urlsplit(proxy or base_url)
    try:
        port = parts.port
    except ValueError:
        port = None
    scheme = parts.scheme.lower()
    port = port or _DEFAULT_PORTS.get(scheme) or 80
    host = parts.hostname or "localhost"
    return host, port, (f"the proxy {display_url(proxy)} (from the *_PROXY environment) for {display_url(base_url)}" if proxy else "")


def reachable(base_url: str, timeout: float = 1.5) -> tuple[bool, str]:
    """A TCP connect to the first hop (the server, or the proxy the sender will go through): cheap,
    and enough to skip a doomed SDK start."""
    import socket

    host, port, via = server_address(base_url)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as e:
        return False, f"cannot connect to {host}:{port}" + (f", {via}" if via else "") + f": {e.strerror or e}"


_STATUS_NUMBERS = ("last_attempt_epoch", "next_attempt_epoch", "consecutive_failures", "sent_total")
_STATUS_TEXTS = ("last_success", "last_attempt", "auth_failed_keys", "running_since")


def _finite(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return number if number == number and abs(number) != float("inf") else 0.0


def _clean_problem(value) -> dict | None:
    """An error entry of the status file ({"time", "kind", "detail", "advice", ...}) with text fields, or None."""
    if not isinstance(value, dict):
        return None
    out = {k: (v if isinstance(v, (str, int, float, bool)) or v is None else str(v)) for k, v in value.items() if isinstance(k, str)}
    for k in ("time", "kind", "detail", "advice"):
        if k in out and out[k] is not None and not isinstance(out[k], str):
            out[k] = str(out[k])
    if isinstance(out.get("http_status"), bool) or not isinstance(out.get("http_status"), (int, type(None))):
        out["http_status"] = None
    return out


def read_sender_status(paths: Paths) -> tuple[dict, str]:
    """The sender status file with every field of the type we write (anything else dropped), and a
    problem to report ("" if none). Never raises: a file someone else wrote (a JSON list, garbage,
    a root-owned copy) must not stop `status`, `drain` or the worker."""
    try:
        with open(paths.sender_status, "rb") as f:
            data = json.loads(f.read().decode("utf-8", "replace"))
    except FileNotFoundError:
        return {}, ""
    except OSError as e:
        return {}, access_advice(paths.sender_status, e)
    except ValueError:
        return {}, f"{paths.sender_status} is not JSON: set aside, the next send rewrites it"
    if not isinstance(data, dict):
        return {}, f"{paths.sender_status} holds a JSON {type(data).__name__}, not an object: set aside, the next send rewrites it"
    status = {k: v for k, v in data.items() if isinstance(k, str)}  # fields of others kept as they are
    for k in _STATUS_NUMBERS:
        if k in data:
            status[k] = _finite(data[k])
    for k in ("consecutive_failures", "sent_total"):
        if k in status:
            status[k] = max(0, min(int(status[k]), 10**12))
    for k in _STATUS_TEXTS:
        if k in status and not isinstance(status[k], str):
            del status[k]
    if "pid" in status and (isinstance(status["pid"], bool) or not isinstance(status["pid"], int)):
        del status["pid"]
    for k in ("last_error", "bootstrap_error"):
        if k in status:
            status[k] = _clean_problem(status[k])
    return status, ""


MAX_DELIVERED = 20_000  # turns remembered as delivered (about 2 MB); the oldest are forgotten first


def load_delivered(paths: Paths) -> dict[str, tuple[str, str]]:
    """key -> (rev, queued_at) of the newest version Langfuse accepted, for the last MAX_DELIVERED turns."""
    try:
        with open(paths.delivered, "rb") as f:
            data = json.loads(f.read().decode("utf-8", "replace"))
    except (OSError, ValueError):
        return {}
    revs = data.get("revs") if isinstance(data, dict) else None
    if not isinstance(revs, dict):
        return {}
    return {
        k: (v[0], v[1]) for k, v in revs.items() if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], str)
    }


def remember_delivered(paths: Paths, accepted: dict[str, tuple[str, str]]) -> None:
    """Add what Langfuse just accepted (never replacing a newer version), keep the newest MAX_DELIVERED."""
    if not accepted:
        return
    revs = load_delivered(paths)
    for key, (rev, queued_at) in accepted.items():
        if key not in revs or queued_at >= revs[key][1]:
            revs[key] = (rev, queued_at)
    if len(revs) > MAX_DELIVERED:
        revs = dict(sorted(revs.items(), key=lambda kv: kv[1][1])[-MAX_DELIVERED:])
    try:
        write_atomic(paths.delivered, json.dumps({"v": 1, "revs": revs}, separators=(",", ":")).encode())
    except OSError:
        pass  # only `drain --retry-dead` needs it, and it then errs on keeping dead letters


def superseded_by_delivered(record: dict, delivered: dict[str, tuple[str, str]]) -> bool:
    """Langfuse already has this version of the turn, or a newer one."""
    seen = delivered.get(record.get("key"))
    if seen is None:
        return False
    queued_at = record.get("queued_at") if isinstance(record.get("queued_at"), str) else ""
    return record.get("rev") == seen[0] or queued_at <= seen[1]


def update_sender_status(paths: Paths, **changes) -> dict:
    status, _ = read_sender_status(paths)
    status.update(changes)
    try:
        write_atomic(paths.sender_status, json.dumps(status, ensure_ascii=False, indent=1).encode())
    except OSError:
        pass
    return status


def _record_failure(paths: Paths, settings: Settings, kind: str, http_status, detail: str, advice: str, log) -> None:
    status, _ = read_sender_status(paths)
    failures = int(status.get("consecutive_failures") or 0) + 1
    # Every failure backs off (no keys and no SDK too: retried at once, they would fill the log
    # every poll); hook news retries after RETRY_ON_NEWS_S, and keys set or changed at once.
    wait = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** min(failures - 1, 30))
    update_sender_status(
        paths,
        last_attempt=now_iso(),
        last_attempt_epoch=time.time(),
        consecutive_failures=failures,
        next_attempt_epoch=time.time() + wait,
        auth_failed_keys=key_fingerprint(settings) if kind in ("auth", "nokeys") else None,
        last_error={"time": now_iso(), "kind": kind, "http_status": http_status, "detail": detail, "advice": advice},
    )
    log.error("%s", advice)


def merge_versions(records: list[dict]) -> dict:
    """The queued versions of one key as one record: the newest trace data and, per observation
    id, its newest version (a later version may hold only the observations that changed)."""
    records = sorted(records, key=lambda r: r.get("queued_at") or "")  # stable: file order breaks ties
    if len(records) == 1:
        return records[0]
    observations: dict[str, dict] = {}
    for r in records:
        for o in r.get("observations") or []:
            observations[o.get("id")] = o  # a dict keeps the first position: the root stays first
    newest = records[-1]
    now = newest.get("observation_ids") if newest.get("partial") else [o.get("id") for o in newest.get("observations") or []]
    if isinstance(now, list):  # an observation the turn no longer holds (a line Claude Code dropped) is not sent
        keep = set(now)
        observations = {k: o for k, o in observations.items() if k in keep}
    merged = dict(newest, observations=list(observations.values()))
    if not records[0].get("partial"):
        merged.pop("partial", None)
        merged.pop("observation_ids", None)
    return merged


YIELD_AFTER_S = 1.0  # a pass sends at least this long before it yields to newer records


def _mtime_ns(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def drain_queue(settings: Settings, log, progress=None, keep_going=None, yield_to_newer: bool = False) -> DrainSummary:
    """Send the queue newest first; a record leaves the queue only after the server accepted it.

    Newest first: the turn the user just finished reaches Langfuse within seconds even behind a
    backlog (an outage, or 20 MB of transcript the hook never saw); the backlog follows. Every
    record is a whole trace (versions of one turn are merged first), so the order changes nothing
    in what Langfuse ends with.

    keep_going() is asked between records: False stops early (the worker is handing over).
    yield_to_newer (the worker): a pass through a long backlog stops early (`yielded`) once a hook
    appended to the queue, so the caller's next pass sends the turn just finished first instead
    of after the whole backlog.
    """
    paths = Paths(settings.state_dir)
    summary = DrainSummary()
    seen_mtime = _mtime_ns(paths.queue)  # before the read: an append after it is a newer record
    entries = queue_read(paths.queue)
    dead: list[dict] = []
    done: dict[str, str] = {}
    for e in entries:
        if e.record is None and e.error != "incomplete last line":
            dead.append({"dead_at": now_iso(), "reason": e.error, "raw": e.raw.decode("utf-8", "replace")})
            summary.corrupt += 1
    versions: dict[str, list[dict]] = {}
    for e in entries:
        if e.record is not None:
            versions.setdefault(e.record["key"], []).append(e.record)
    # the newest version of every observation of a turn is the one Langfuse must end with
    merged = [(merge_versions(v), position) for position, v in enumerate(versions.values())]
    order = [r for r, _ in sorted(merged, key=lambda rp: (rp[0].get("queued_at") or "", rp[1]), reverse=True)]
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
    pass_started = time.monotonic()
    accepted: dict[str, tuple[str, str]] = {}  # what Langfuse took since the last commit: key -> (rev, queued_at)
    try:
        for i, record in enumerate(order):
            delivery = sender.send(record)
            if delivery.outcome == "accepted":
                done[record["key"]] = record.get("rev", "")
                accepted[record["key"]] = (str(record.get("rev", "")), str(record.get("queued_at") or ""))
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
            if (
                yield_to_newer
                and i + 1 < len(order)
                and time.monotonic() - pass_started >= YIELD_AFTER_S
                and _mtime_ns(paths.queue) != seen_mtime
            ):
                summary.kept, summary.yielded = len(order) - i - 1, True
                break
            # Rewriting the queue holds the lock hooks append under: with a big backlog, commit
            # rarely enough that hooks wait at most ~5 % of the time (a crash only means resends).
            if time.monotonic() - last_commit > max(1.0, 20 * commit_cost):
                t0 = time.monotonic()
                remember_delivered(paths, accepted)
                queue_remove(paths, done, dead)
                commit_cost = time.monotonic() - t0
                done, dead, accepted = {}, [], {}
                last_commit = time.monotonic()
                seen_mtime = _mtime_ns(paths.queue)  # our own rewrite is not news (an append racing it is caught next time)
    finally:
        try:
            sender.close()
        except Exception as e:  # closing must not lose the bookkeeping below
            log.warning("closing the Langfuse client failed: %s", e)
        remember_delivered(paths, accepted)
        queue_remove(paths, done, dead)
    if summary.sent or summary.dead:
        changes: dict = {"last_attempt": now_iso(), "last_attempt_epoch": time.time()}
        if summary.sent:
            changes.update(
                last_success=now_iso(),
                sent_total=int(read_sender_status(paths)[0].get("sent_total") or 0) + summary.sent,
            )
        if not summary.stopped_by:
            changes.update(consecutive_failures=0, next_attempt_epoch=0, auth_failed_keys=None, last_error=None)
        update_sender_status(paths, **changes)
    return summary
