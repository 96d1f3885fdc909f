"""One hook event -> the transcript's new turns -> redacted records -> queue, then the cursor (the worker's per-event work)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import NamedTuple

from . import facts
from .config import HOOK_VERSION, LOCK_TIMEOUT_S, Settings, ensure_state_dir
from .event import HookEvent
from .files import FileLock, LockTimeout, Paths
from .forks import find_fork_prefix
from .mute import is_muted
from .records import (
    TASK_ID_RE,
    TASK_TOOL_USE_RE,
    TraceContext,
    answer_lags,
    apply_trace_settings,
    project_name,
    thinking_counts,
    trace_id_for,
    turn_record,
    turn_settles_later,
)
from .redaction import Redactor, encode_record, sanitize_record
from .store import MAX_EMITTED, UNREADABLE_TURN, dead_append, load_state, now_iso, queue_append, state_key, update_state_entry
from .subagents import SubagentFinder
from .transcript import READ_CHUNK, iter_rows
from .turns import AGENT_TOOL_NAMES, Turn, group_turns, prompt_text

# ============================================================================ collect: transcript -> queued records


MAX_SENT_TURNS = 50  # turns whose observation revisions are kept (older ones are never re-read)


class CollectResult(NamedTuple):
    records: list
    entry: dict
    turns_seen: int = 0
    bad_lines: int = 0
    lagging: bool = False  # the event's final answer is not on disk yet; the trailing turn was held back
    dead: tuple = ()  # dead letters for turns that could not be made into a record (skipped, never retried)


def collect_records(
    event: HookEvent,
    entry: dict,
    settings: Settings,
    redactor: Redactor,
    log=None,
    sink=None,
    hold_lagging: bool = False,
    late: list | None = None,
) -> CollectResult:
    """New bytes of the session transcript -> new or changed turn records.

    hold_lagging: when a Stop event's final answer is not on disk yet, do not emit the trailing
    turn (the caller waits for Claude Code's flush and calls again); `lagging` says so.

    late: keys of turns already queued to read again instead (a fact arrived after them): only
    their bytes are read, as they were when last queued, and only the observations that changed
    are queued again; the cursor does not move.

    Streams: one turn is held in memory at a time; records go to `sink` (default: the result's
    list). The trailing turn is emitted but not consumed: the next run re-reads it, so a turn
    that grows (Stop ladders, late flushes, background agents) is upserted under the same ids.
    """
    path = event.transcript_path
    entry = dict(entry or {})
    entry.setdefault("session_id", event.session_id)
    entry.setdefault("path", path)
    emitted: dict = dict(entry.get("emitted") or {})
    agents: dict = dict(entry.get("agents") or {})
    # observation id -> revision of what was queued, for the turns that may still change (the open
    # one, a launching turn whose background agent finishes): a changed turn is queued again with
    # only the observations that changed, so a generation is sent once, never again as routine
    sent: dict = dict(entry.get("sent") or {})
    # turn key -> where the queued version is in the transcript (bytes, number, times), so a late
    # fact can read just that turn again
    spans: dict = dict(entry.get("spans") or {})
    offset = int(entry.get("offset") or 0)
    turns_before = int(entry.get("turns_before") or 0)
    records: list[dict] = []
    sink = sink or records.append
    bad: list[int] = []
    dead: list[dict] = []
    finder = SubagentFinder(path, event.session_id)
    # what hook events told us that the transcript does not (permission requests, tool run times,
    # agent starts, the session's start, API failures): details on top, never required
    session_facts = facts.load(Paths(settings.state_dir), event.session_id) if settings.state_dir else {}
    if not os.path.isfile(path):
        if log:
            log.warning("transcript %s does not exist (yet) or is not a file; nothing to read", path)
        return CollectResult([], entry)

    def emit(turn: Turn, number: int, ev: HookEvent | None) -> None:
        try:
            finder.attach(turn)
            facts.apply(turn, session_facts)
            tid = trace_id_for(event.session_id, turn.key)
            ctx = TraceContext(
                event.session_id,
                settings.user_id,
                project_name(turn.meta_row.get("cwd") or event.cwd),
                number,
                tid,
                entry.get("forked_from") or "",
            )
            rec = apply_trace_settings(turn_record(turn, ctx, ev), settings)  # tags, environment, host, CI
            rec = sanitize_record(rec, redactor, settings.max_field_chars, content=settings.content)
            # encoded once: the revs are hashed from the bytes the queue writer appends
            rec, rev, obs_revs = encode_record(rec)
        except Exception as e:  # one turn that cannot become a record never blocks the turns after it
            skip_unreadable_turn(turn, number, e)
            return
        note_thinking(turn)
        span = {"start": turn.start_offset, "end": turn.end_offset, "turn_number": number, "key": turn.key}
        span.update(t0=turn.start or "", t1=turn.end or turn.start or "")
        if ev is not None and ev.permission_mode and not turn.meta_row.get("permissionMode"):
            span["pm"] = ev.permission_mode  # what the record took from the event: the same when read again
        if answer_lags(turn, ev):
            span["lag"] = True  # the event's answer stood in for the disk's: only a transcript event reads it again
        spans.pop(turn.key, None)
        spans[turn.key] = span
        for call in turn.tools.values():
            if call.name in AGENT_TOOL_NAMES and (call.agent_id or call.agent is not None):
                link = {"start": turn.start_offset, "end": turn.end_offset, "turn_number": number, "key": turn.key}
                agents[call.id] = link
                if call.agent_id:
                    agents[call.agent_id] = link
        if emitted.get(turn.key) != rev:
            rec["rev"] = rev
            emitted.pop(turn.key, None)
            emitted[turn.key] = rev
            revs = {o["id"]: r for o, r in zip(rec["observations"], obs_revs, strict=True)}
            before = sent.pop(turn.key, None)
            if before is not None:
                rec["observations"] = [o for o in rec["observations"] if before.get(o["id"]) != revs[o["id"]]]
                rec["partial"] = True  # the rest was queued before; delivery merges the versions of a key
                rec["observation_ids"] = list(revs)  # what the turn holds now (a line Claude Code dropped is gone)
            sent[turn.key] = revs
            if rec["observations"]:
                sink(rec)
        if turn.kind == "task-notification":
            # the background agent it reports on has finished, so its file is complete now (at its
            # SubagentStop the last line often was not yet): refresh the turn that launched it
            text = prompt_text(turn.prompt)
            for rx in (TASK_TOOL_USE_RE, TASK_ID_RE):
                m = rx.search(text)
                link = agents.get(m.group(1)) if m else None
                if link and link["start"] < turn.start_offset:
                    reemit(link)
                    break

    def note_thinking(turn: Turn) -> None:
        # did Claude Code record thinking text in this session? (`status`/`doctor` say when it never does)
        omitted, shown = thinking_counts(turn)
        if omitted or shown:
            seen = dict(entry.get("thinking") or {})
            seen["omitted"] = bool(seen.get("omitted")) or omitted > 0
            seen["shown"] = bool(seen.get("shown")) or shown > 0
            seen["at"] = time.time()
            entry["thinking"] = seen

    def skip_unreadable_turn(turn: Turn, number: int, error: Exception) -> None:
        mark = f"dead:{turn.end_offset}"  # the same unchanged turn is dead-lettered once, not on every run
        if emitted.get(turn.key) == mark:
            return
        emitted.pop(turn.key, None)
        emitted[turn.key] = mark
        reason = f"turn {turn.key!r} (turn {number}, bytes {turn.start_offset}-{turn.end_offset} of {path}) could not be made into a trace: {type(error).__name__}: {error}"
        dead.append(
            {
                "dead_at": now_iso(),
                "kind": UNREADABLE_TURN,
                "reason": reason,
                "session_id": event.session_id,
                "transcript_path": path,
                "turn_key": turn.key,
                "trace_id": trace_id_for(event.session_id, turn.key),  # the trace Langfuse will not have
                "turn_number": number,
                "start_offset": turn.start_offset,
                "end_offset": turn.end_offset,
                "hook_version": HOOK_VERSION,
            }
        )
        if log:
            log.error(
                "%s; skipped (kept in dead letters), the rest of the session is traced. Please report this error.", reason, exc_info=error
            )

    def reemit(link: dict, ev: HookEvent | None = None) -> bool:
        with open(path, "rb") as f2:
            old = next(group_turns(iter_rows(f2, link["start"], link["end"])), None)
        if old is not None and old.key == link.get("key", old.key):
            emit(old, link["turn_number"], ev)
            return True
        return False

    if late is not None:
        return _collect_late(event, entry, path, late, spans, reemit, log, lambda: (emitted, sent, spans, agents), records, dead)

    seen, lagging, settled_size = 0, False, None
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        replaced = bool(entry.get("inode")) and entry.get("inode") != st.st_ino
        if st.st_size < offset or replaced or (offset and entry.get("tail") and _tail_hash(f, offset) != entry.get("tail")):
            # truncated (Claude Code drops a line after a streaming error), replaced, or cut and
            # regrown: the bytes before our offset are not the ones we read, so start over
            if log:
                log.info("transcript %s shrank or was rewritten (size %d, offset %d): re-reading from the start", path, st.st_size, offset)
            offset, turns_before = 0, 0
            entry.pop("forked_from", None)
            entry.pop("fork_checked", None)
        if offset == 0 and not entry.get("fork_checked"):
            fork = find_fork_prefix(path)  # the history a fork copied from its parent is not the fork's
            entry["fork_checked"] = True
            if fork.end:
                offset, turns_before = fork.end, fork.copied_turns
                entry["forked_from"] = fork.parent_session_id
                if log:
                    log.info(
                        "transcript %s is a fork of session %s: its first %d turn(s) are a copy and are not traced again",
                        path,
                        fork.parent_session_id,
                        fork.copied_turns,
                    )
        settled = entry.get("settled_size")
        if (
            event.name in ("Stop", "SessionEnd")
            and offset
            and offset == int(entry.get("offset") or 0)
            and isinstance(settled, int)
            and offset <= settled <= st.st_size
            and entry.get("settled_facts") == _facts_signature(settings, event.session_id)
            and _only_bookkeeping(f, settled, st.st_size)
        ):
            # Nothing since the last read can change a turn (Claude Code's own bookkeeping lines,
            # e.g. last-prompt and cost-state after a Stop): the open turn was queued as it is, so
            # it is not read, grouped and redacted again (seconds for a 25 MB turn).
            entry.update(settled_size=_complete_end(f, st.st_size), size_seen=st.st_size, updated=now_iso(), updated_epoch=time.time())
            return CollectResult([], entry)
        new_offset, new_before = offset, turns_before
        previous: Turn | None = None
        for turn in group_turns(iter_rows(f, offset, bad_lines=bad), bad_lines=bad):
            if previous is not None:
                emit(previous, new_before + 1, None)
                new_offset, new_before = turn.start_offset, new_before + 1
            previous = turn
            seen += 1
        if previous is not None:
            # the trailing turn stays open: new_offset points at its first line
            new_offset = previous.start_offset
            if event.name == "SubagentStop" and not previous.looks_complete():
                pass  # mid-turn (a foreground agent finished): the parent's Stop will emit it
            elif hold_lagging and _event_is_about(event, previous) and turn_settles_later(previous, event):
                lagging = True
            else:
                emit(previous, new_before + 1, event if _event_is_about(event, previous) else None)
                settled_size = _complete_end(f, st.st_size)  # the open turn as of these whole lines is queued

        if event.name == "SubagentStop" and event.agent_id:
            link = agents.get(event.agent_id) or agents.get(str(finder.meta_for_agent(event.agent_id).get("toolUseId") or ""))
            if link and link["start"] < new_offset:
                reemit(link)  # the turn that launched this background agent is behind us
        tail = _tail_hash(f, new_offset) if new_offset else ""

    emitted, sent, spans, agents = _bounded(emitted, sent, spans, agents)
    entry.update(
        sent=sent,
        spans=spans,
        settled_size=settled_size if not bad else None,
        settled_facts=_facts_signature(settings, event.session_id),
        offset=new_offset,
        turns_before=new_before,
        inode=st.st_ino,
        size_seen=st.st_size,
        emitted=emitted,
        agents=agents,
        tail=tail,
        updated=now_iso(),
        updated_epoch=time.time(),
        cwd=event.cwd or entry.get("cwd", ""),
    )
    return CollectResult(records, entry, seen, len(bad), lagging, tuple(dead))


def _bounded(emitted: dict, sent: dict, spans: dict, agents: dict) -> tuple[dict, dict, dict, dict]:
    if len(emitted) > MAX_EMITTED:
        emitted = dict(list(emitted.items())[-MAX_EMITTED:])
    if len(sent) > MAX_SENT_TURNS:
        sent = dict(list(sent.items())[-MAX_SENT_TURNS:])
    spans = {k: v for k, v in spans.items() if k in sent}
    if len(agents) > MAX_EMITTED:
        agents = dict(list(agents.items())[-MAX_EMITTED:])
    return emitted, sent, spans, agents


def _collect_late(event: HookEvent, entry: dict, path: str, keys: list, spans: dict, reemit, log, state, records, dead) -> CollectResult:
    """Read the queued turns `keys` again (a fact arrived after them); the cursor stays."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        offset = int(entry.get("offset") or 0)
        if (
            entry.get("inode") != st.st_ino
            or st.st_size < offset
            or (offset and entry.get("tail") and _tail_hash(f, offset) != entry.get("tail"))
        ):
            if log:
                log.info(
                    "transcript %s was rewritten since it was read: the late %s fact is merged when it is read again", path, event.name
                )
            return CollectResult([], entry)
    for key in keys:
        span = spans.get(key)
        if not isinstance(span, dict) or span.get("lag"):
            if log:
                log.debug("turn %r is queued with the Stop event's answer: the late %s fact is merged at its next read", key, event.name)
            continue
        ev = HookEvent("", event.session_id, path, permission_mode=span["pm"]) if span.get("pm") else None
        if not reemit(span, ev) and log:
            log.info("turn %r is no longer where it was in %s: the late %s fact is left out of it", key, path, event.name)
    emitted, sent, spans, agents = _bounded(*state())
    entry.update(emitted=emitted, sent=sent, spans=spans, agents=agents, updated=now_iso(), updated_epoch=time.time())
    return CollectResult(records, entry, len(keys), 0, False, tuple(dead))


# Lines Claude Code writes about the session, never part of a turn (appended after a Stop).
BOOKKEEPING_TYPES = frozenset({"last-prompt", "cost-state", "mode", "atis-latch", "permission-mode", "ai-title", "custom-title"})


def _complete_end(f, size: int, span: int = 1 << 16) -> int | None:
    """The end of the last whole line at or before `size` (None if none in the last `span` bytes):
    a half-written line at the end is not read yet, so its bytes are not "seen"."""
    start = max(0, size - span)
    f.seek(start)
    i = f.read(size - start).rfind(b"\n")
    return start + i + 1 if i >= 0 else None


def _facts_signature(settings: Settings, session_id: str) -> list | None:
    """Size and mtime of the session's facts file: a fact that arrived since is a reason to read."""
    if not settings.state_dir:
        return None
    try:
        st = os.stat(facts.facts_path(Paths(settings.state_dir), session_id))
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _only_bookkeeping(f, start: int, end: int, limit: int = 1 << 20) -> bool:
    """Are the complete lines in [start, end) all bookkeeping (and few)? False when unsure."""
    if end - start > limit:
        return False
    f.seek(start)
    data = f.read(end - start)
    for line in data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            return False
        if not isinstance(row, dict) or row.get("type") not in BOOKKEEPING_TYPES:
            return False
    return True


def _tail_hash(f, offset: int, span: int = 256) -> str:
    """Fingerprint of the bytes just before `offset`: tells a file rewritten under our cursor."""
    start = max(0, offset - span)
    f.seek(start)
    return hashlib.sha256(f.read(offset - start)).hexdigest()[:16]


def _event_is_about(event: HookEvent, turn: Turn) -> bool:
    """Does the event's last_assistant_message belong to this turn (and not to a prompt not yet on disk)?"""
    if event.name not in ("Stop", "StopFailure"):
        return False
    turn_prompt = turn.prompt_row.get("promptId")
    return not (event.prompt_id and turn_prompt and event.prompt_id != turn_prompt)


class Outcome(NamedTuple):
    done: bool  # False: wait and call again (transcript not there yet, or its final answer not flushed)
    queued: int = 0


def make_redactor(settings: Settings, log) -> Redactor:
    try:
        return Redactor(settings.redact, settings.redact_patterns)
    except ValueError as e:
        log.error("%s; fix CC_LANGFUSE_REDACT_PATTERNS. Using the built-in rules only.", e)
        return Redactor(settings.redact, [])


def process_event(event: HookEvent, settings: Settings, log, final: bool = True) -> Outcome:
    """One hook event: the transcript's new turns -> redacted records -> queue, then the cursor.

    final=False lets the caller wait for Claude Code: a transcript that does not exist yet, or a
    Stop whose final answer is not on disk yet, returns done=False and changes nothing.
    """
    paths = Paths(settings.state_dir)
    ensure_state_dir(paths.dir)
    if not settings.enabled or is_muted(paths.dir, event.session_id):
        skip_while_disabled(event, settings)  # muted (`mute`, `purge`): the same, for this session only
        return Outcome(True)
    if event.name in facts.FACT_EVENTS:
        # facts: filed for the session; the transcript events merge them into the turns they read,
        # and a turn already queued without it is read again at once (only that turn's bytes)
        raw = event.raw if isinstance(event.raw, dict) else {}
        filed = facts.record(paths, raw)
        if not filed:
            log.debug("%s event of session %s carried no usable fact", event.name, event.session_id)
        elif filed == facts.NEW:
            return merge_late_fact(event, raw, settings, log)
        return Outcome(True)
    if event.name == "StopFailure" and isinstance(event.raw, dict):
        facts.record(paths, event.raw)  # the error type; then the failed turn is read and closed at once
    if not os.path.isfile(event.transcript_path) and not final and not os.path.exists(event.transcript_path):
        return Outcome(False)
    if event.name == "SubagentStop" and not event.agent_id:
        log.debug("SubagentStop without agent_id (a main-thread stop): the session's transcript is read as usual")
    key = state_key(event.session_id, event.transcript_path)
    lock = FileLock(paths.session_lock(event.session_id), timeout=LOCK_TIMEOUT_S)
    if not lock.acquire():
        log.warning(
            "session %s is being processed by another run for over %.0fs: skipped this event; "
            "the next event picks the turns up, nothing is lost",
            event.session_id,
            LOCK_TIMEOUT_S,
        )
        return Outcome(True)
    try:
        entry = load_state(paths)["transcripts"].get(key, {})
        result = collect_records(event, entry, settings, make_redactor(settings, log), log, hold_lagging=not final)
        if result.lagging and not result.records:
            return Outcome(False)
        if result.bad_lines:
            log.warning("skipped %d unreadable line(s) in %s", result.bad_lines, event.transcript_path)
        if not commit(paths, key, event, entry, result):
            log.warning(
                "the queue was busy (a large backlog being rewritten); the cursor stays, the next run "
                "queues these %d record(s); nothing is lost",
                len(result.records),
            )
            return Outcome(True)
        log.debug(
            "%s %s: %d turn(s) read, %d record(s) queued%s",
            event.name,
            event.session_id,
            result.turns_seen,
            len(result.records),
            " (final answer not on disk yet)" if result.lagging else "",
        )
        return Outcome(not result.lagging, len(result.records))
    finally:
        lock.release()


def merge_late_fact(event: HookEvent, raw: dict, settings: Settings, log) -> Outcome:
    """A fact just filed whose turn was already queued (the fact hooks run async: they can report
    after the Stop, even after the next turn): that turn is read again from its recorded bytes and
    the observations the fact changes are queued again (same ids, a partial version). Whether a
    queued turn can hold it is read from the session's small queued index, so the usual case (the
    fact came first) reads neither the transcript nor the state."""
    paths = Paths(settings.state_dir)
    queued = facts.load_queued(paths, event.session_id)
    late = facts.late_turns(raw, facts.load(paths, event.session_id) if queued else {}, event.session_id, queued)
    if not late.keys:
        (log.info if late.lost else log.debug)("%s fact of session %s filed, not merged now: %s", event.name, event.session_id, late.why)
        return Outcome(True)
    lock = FileLock(paths.session_lock(event.session_id), timeout=LOCK_TIMEOUT_S)
    if not lock.acquire():
        log.warning("session %s is busy: the late %s fact is merged when its turn is read again", event.session_id, event.name)
        return Outcome(True)
    try:
        where = event._replace(transcript_path=queued.get("path") or event.transcript_path)
        key = state_key(event.session_id, where.transcript_path)
        entry = load_state(paths)["transcripts"].get(key)
        if not entry or not os.path.isfile(where.transcript_path):
            log.info("%s fact of session %s: the cursor of %s is gone; not merged", event.name, event.session_id, where.transcript_path)
            return Outcome(True)
        result = collect_records(where, entry, settings, make_redactor(settings, log), log, late=late.keys)
        if not commit(paths, key, where, entry, result):
            log.warning(
                "the queue was busy: the late %s fact of session %s shows when its turn is read again", event.name, event.session_id
            )
            return Outcome(True)
        log.debug(
            "late %s fact of session %s: %d queued turn(s) read again, %d record(s) queued",
            event.name,
            event.session_id,
            result.turns_seen,
            len(result.records),
        )
        return Outcome(True, len(result.records))
    finally:
        lock.release()


def commit(paths: Paths, key: str, event: HookEvent, before: dict, result: CollectResult) -> bool:
    """The records (and every turn that had to be skipped) durable in the queue, then the cursor
    and the session's queued index: never the other way round. False, with nothing moved, when
    the queue stayed busy (a large backlog being rewritten): the next run reads the same again."""
    try:
        queue_append(paths, result.records)
        dead_append(paths, result.dead)
    except LockTimeout:
        return False
    update_state_entry(paths, key, result.entry)
    note_queued(paths, event, before, result.entry)
    return True


def note_queued(paths: Paths, event: HookEvent, before: dict, after: dict) -> None:
    """Keep the session's queued index (facts.write_queued) in step with its cursor."""
    if before.get("sent") == after.get("sent") and before.get("spans") == after.get("spans"):
        return
    facts.write_queued(paths, event.session_id, event.transcript_path, after.get("sent") or {}, after.get("spans") or {})


def skip_while_disabled(event: HookEvent, settings: Settings) -> None:
    """Tracing is off (TRACE_TO_LANGFUSE=false): move the cursor past everything said so far,
    reading nothing, so that turning tracing back on never uploads what was said while it was off."""
    if not os.path.isfile(event.transcript_path):
        return
    paths = Paths(settings.state_dir)
    ensure_state_dir(paths.dir)
    lock = FileLock(paths.session_lock(event.session_id), timeout=LOCK_TIMEOUT_S)
    if not lock.acquire():
        return  # the next run moves it
    try:
        key = state_key(event.session_id, event.transcript_path)
        entry = dict(load_state(paths)["transcripts"].get(key) or {}, session_id=event.session_id, path=event.transcript_path)
        with open(event.transcript_path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - READ_CHUNK))
            tail = f.read()
            end = size - (len(tail) - tail.rfind(b"\n") - 1) if b"\n" in tail else entry.get("offset", 0)
            entry.update(
                offset=end,
                inode=os.fstat(f.fileno()).st_ino,
                size_seen=size,
                tail=_tail_hash(f, end) if end else "",
                updated=now_iso(),
                updated_epoch=time.time(),
                paused=True,
            )
        entry.setdefault("emitted", {})
        update_state_entry(paths, key, entry)
    finally:
        lock.release()
