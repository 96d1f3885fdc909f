"""`backfill`: sessions from before the install, queued with the live hook's ids (so nothing is doubled)."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator

from .collect import collect_records, note_queued
from .config import FALSE_WORDS, LazyLog, Settings, _home, ensure_state_dir
from .event import HookEvent
from .files import FileLock, Paths, read_json_file
from .mute import load_muted
from .records import project_name
from .redaction import Redactor
from .runtime import self_command, wake_worker
from .store import dead_append, load_state, queue_append, state_key, update_state_entry
from .transcript import iter_rows
from .turns import parse_ts

# ============================================================================ backfill

SINCE_RE = re.compile(r"^\s*(\d+)\s*([hdw])\s*$")


def parse_since(text: str | None) -> float | None:
    """'30d', '12h', '2w' or an ISO date -> epoch seconds; None for no limit."""
    if not text:
        return None
    m = SINCE_RE.match(text)
    if m:
        return time.time() - int(m.group(1)) * {"h": 3600, "d": 86400, "w": 7 * 86400}[m.group(2)]
    t = parse_ts(text if "T" in text else text + "T00:00:00+00:00")
    if t is None:
        raise ValueError(f"--since {text!r}: use a duration like 30d, 12h, 2w or a date like 2026-10-01")
    return t.timestamp()


def projects_roots() -> list[str]:
    roots = []
    for base in (os.environ.get("CLAUDE_CONFIG_DIR") or "").split(","):
        if base.strip():
            roots.append(os.path.join(os.path.expanduser(base.strip()), "projects"))
    roots.append(os.path.join(_home(), ".claude", "projects"))
    roots.append(os.path.join(_home(), ".config", "claude", "projects"))
    out = []
    for r in roots:
        if os.path.isdir(r) and os.path.realpath(r) not in {os.path.realpath(o) for o in out}:
            out.append(r)
    return out


def session_files(roots: list[str]) -> Iterator[str]:
    """Main session transcripts: <root>/<slug>/<session>.jsonl (agent files are reached through their parents)."""
    for root in roots:
        for slug in sorted(os.listdir(root)):
            d = os.path.join(root, slug)
            if not os.path.isdir(d):
                continue
            for name in sorted(os.listdir(d)):
                if name.endswith(".jsonl") and not name.startswith("agent-"):
                    yield os.path.join(d, name)


def transcript_cwd(path: str) -> str:
    try:
        with open(path, "rb") as f:
            for i, row in enumerate(iter_rows(f, 0)):
                if row.data.get("cwd"):
                    return str(row.data["cwd"])
                if i > 200:
                    break
    except OSError:
        pass
    return ""


def project_opted_out(cwd: str) -> bool:
    """TRACE_TO_LANGFUSE=false in the project's .claude/settings(.local).json env block."""
    if not cwd:
        return False
    value = None
    for name in ("settings.json", "settings.local.json"):  # local wins
        data = read_json_file(os.path.join(cwd, ".claude", name), {})
        env = data.get("env") if isinstance(data, dict) else None
        if isinstance(env, dict) and "TRACE_TO_LANGFUSE" in env:
            value = str(env["TRACE_TO_LANGFUSE"])
    return value is not None and value.strip().lower() in FALSE_WORDS


class Progress:
    """A one-line progress bar on stderr (files, turns, rate, ETA), only on a terminal."""

    def __init__(self, total_bytes: int, total_files: int, enabled: bool):
        self.total_bytes, self.total_files, self.enabled = max(1, total_bytes), total_files, enabled
        self.bytes = self.files = self.turns = 0
        self.t0 = time.monotonic()
        self.last = 0.0

    def update(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < 0.2):
            return
        self.last = now
        elapsed = max(1e-6, now - self.t0)
        frac = min(1.0, self.bytes / self.total_bytes)
        eta = (elapsed / frac - elapsed) if frac > 0 else 0
        bar = "#" * int(frac * 24)
        sys.stderr.write(
            f"\r[{bar:<24}] {frac * 100:5.1f}%  files {self.files}/{self.total_files}  turns {self.turns}"
            f"  {self.turns / elapsed:6.1f} turns/s  ETA {eta:5.0f}s "
        )
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            self.update(force=True)
            sys.stderr.write("\n")


def cmd_backfill(settings: Settings, since: str | None, project: str | None, dry_run: bool, roots: list[str] | None = None) -> int:
    os.umask(0o077)
    try:
        since_epoch = parse_since(since)
    except ValueError as e:
        print(f"backfill: {e}", file=sys.stderr)
        return 2
    roots = roots or projects_roots()
    if not roots:
        print("backfill: no Claude Code projects folder found (~/.claude/projects, CLAUDE_CONFIG_DIR)", file=sys.stderr)
        return 1
    try:
        redactor = Redactor(settings.redact, settings.redact_patterns)
    except ValueError as e:
        print(f"backfill: {e}", file=sys.stderr)
        return 2
    candidates, skipped_opt_out, skipped_project, skipped_muted = [], 0, 0, 0
    muted = load_muted(settings.state_dir) if settings.state_dir else {}
    for path in session_files(roots):
        try:
            st = os.stat(path)
        except OSError:
            continue
        if since_epoch and st.st_mtime < since_epoch:
            continue
        cwd = transcript_cwd(path)
        if project and project_name(cwd) != project:
            skipped_project += 1
            continue
        if project_opted_out(cwd):
            skipped_opt_out += 1
            continue
        if os.path.basename(path)[: -len(".jsonl")] in muted:
            skipped_muted += 1
            continue
        candidates.append((path, st.st_size, cwd))
    log = None if dry_run else LazyLog(settings)  # a dry run leaves no trace on disk, not even a log
    paths = Paths(settings.state_dir)
    if not dry_run:
        ensure_state_dir(paths.dir)
    progress = Progress(sum(c[1] for c in candidates), len(candidates), sys.stderr.isatty())
    totals = {"sessions": 0, "turns": 0, "records": 0, "bytes": 0, "first": "", "last": ""}
    batch: list[dict] = []
    failed: list[str] = []  # files that could not be read: reported and skipped, the others go on
    unreadable_turns = 0

    def flush_batch() -> None:
        if batch and not dry_run:
            queue_append(paths, batch, lock_timeout=120)
        batch.clear()

    for path, size, cwd in candidates:
        session_id = os.path.basename(path)[: -len(".jsonl")]
        event = HookEvent(name="Backfill", session_id=session_id, transcript_path=path, cwd=cwd)
        key = state_key(session_id, path)
        lock = FileLock(paths.session_lock(session_id), timeout=30) if not dry_run else None
        if lock and not lock.acquire():
            print(f"backfill: {path} is busy (a hook is processing it); skipped, run backfill again later", file=sys.stderr)
            continue
        try:
            entry = load_state(paths)["transcripts"].get(key, {}) if not dry_run or os.path.exists(paths.state) else {}

            def sink(rec: dict) -> None:
                totals["records"] += 1
                totals["bytes"] += len(json.dumps(rec, ensure_ascii=False))
                root = rec["observations"][0]
                totals["first"] = min(totals["first"] or root["start"], root["start"])
                totals["last"] = max(totals["last"], root["end"] or "")
                batch.append(rec)
                if len(batch) >= 50:
                    flush_batch()

            result = collect_records(event, entry, settings, redactor, log, sink=sink)
            flush_batch()  # records durable before the cursor moves
            unreadable_turns += len(result.dead)
            if not dry_run:
                dead_append(paths, result.dead, lock_timeout=120)
                update_state_entry(paths, key, result.entry)
                note_queued(paths, event, entry, result.entry)  # a late fact for these turns finds them
        except Exception as e:  # one bad file never stops the others
            try:
                flush_batch()  # the turns read before the error are good: keep them
            except Exception:
                batch.clear()
            failed.append(path)
            print(f"backfill: {path} could not be read ({type(e).__name__}: {e}); skipped, going on with the others", file=sys.stderr)
            if log:
                log.exception("backfill: %s could not be read: %s; skipped", path, e)
            progress.bytes += size
            continue
        finally:
            if lock:
                lock.release()
        totals["sessions"] += 1
        totals["turns"] += result.turns_seen
        progress.files += 1
        progress.turns += result.turns_seen
        progress.bytes += size
        progress.update()
    progress.done()
    what = "would queue" if dry_run else "queued"
    print(
        f"backfill: {totals['sessions']} session(s), {totals['turns']} turn(s) read, {totals['records']} trace record(s) {what} "
        f"({totals['bytes'] / 1048576:.1f} MB)" + (f", {totals['first'][:10]} .. {totals['last'][:10]}" if totals["first"] else "")
    )
    if skipped_opt_out:
        print(f"backfill: {skipped_opt_out} session(s) skipped: their project sets TRACE_TO_LANGFUSE=false")
    if skipped_project:
        print(f"backfill: {skipped_project} session(s) of other projects skipped")
    if skipped_muted:
        print(f"backfill: {skipped_muted} muted session(s) skipped (`unmute ID` to trace them)")
    if unreadable_turns:
        print(
            f"backfill: {unreadable_turns} turn(s) could not be made into traces and were skipped"
            + ("" if dry_run else f" (where and why: {paths.dead}; the log has the details)")
        )
    if failed:
        print(f"backfill: {len(failed)} file(s) could not be read and were skipped (listed above); the others were read")
    if not dry_run and totals["records"]:
        if settings.enabled:
            wake_worker(paths, log)
        print(f"backfill: the worker delivers them in the background; `{self_command()} status` shows progress")
    return 1 if failed else 0
