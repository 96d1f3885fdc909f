"""Forked sessions: the history Claude Code copied into a fork's transcript is not the fork's.

`claude --resume SID --fork-session` (and `/branch`) start a new transcript that begins with a copy
of every earlier line of the parent session, under the fork's new session id, and give every copied
user line the fork's new `promptId` (the one its first new prompt gets); uuids, message ids and
timestamps stay as they were. Read as the fork's own, those lines would make one trace of the whole
history, count every earlier generation a second time and hide the new prompt. So on the first read
of a transcript the worker looks for that copied prefix and starts the cursor after it.

The cheap sign comes first: two turn-opening lines with one promptId (in a session of its own every
prompt has a promptId of its own). Only then are the other transcripts of the same project folder
searched for the first line's uuid, which only a copy can share, and the copy ends at the first
line whose uuid the parent does not hold.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from .transcript import iter_rows
from .turns import TURN_STARTERS, user_row_kind

_SCAN_CHUNK = 1 << 20


class ForkPrefix(NamedTuple):
    end: int  # offset of the fork's first own line (0: not a fork)
    parent_session_id: str = ""
    parent_path: str = ""
    copied_turns: int = 0  # turns in the copied history (the fork's own turns are numbered after them)


NOT_A_FORK = ForkPrefix(0)


def _looks_forked(path: str) -> tuple[bool, str]:
    """(two turn starters share a promptId, uuid of the first line that has one)."""
    seen: set = set()
    first_uuid = ""
    previous = ""
    with open(path, "rb") as f:
        for row in iter_rows(f, 0):
            data = row.data
            if not first_uuid and isinstance(data.get("uuid"), str):
                first_uuid = data["uuid"]
            if row.type != "user":
                continue
            kind = user_row_kind(data, previous)
            previous = kind
            prompt_id = data.get("promptId")
            if kind in TURN_STARTERS and isinstance(prompt_id, str) and prompt_id:
                if prompt_id in seen:
                    return True, first_uuid
                seen.add(prompt_id)
    return False, first_uuid


def _file_holds(path: str, needle: bytes) -> bool:
    """Streaming byte search (chunks overlap by the needle's length)."""
    tail = b""
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_SCAN_CHUNK):
                if needle in tail + chunk:
                    return True
                tail = chunk[-len(needle) :]
    except OSError:
        return False
    return False


def _uuids_and_session(path: str) -> tuple[set, str]:
    """Every line's own uuid (parsed: a nested object may hold a "uuid" key too) and the session id."""
    out: set = set()
    session_id = ""
    with open(path, "rb") as f:
        for row in iter_rows(f, 0):
            uuid = row.data.get("uuid")
            if isinstance(uuid, str):
                out.add(uuid)
            if not session_id and isinstance(row.data.get("sessionId"), str):
                session_id = row.data["sessionId"]
    return out, session_id


def find_fork_prefix(path: str) -> ForkPrefix:
    """The copied history at the start of `path`, if it is a fork of another transcript in its folder."""
    suspect, first_uuid = _looks_forked(path)
    if not suspect or not first_uuid:
        return NOT_A_FORK
    needle = b'"uuid":"' + first_uuid.encode() + b'"'
    folder = os.path.dirname(path)
    parents = []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return NOT_A_FORK
    for name in names:
        other = os.path.join(folder, name)
        if name.endswith(".jsonl") and other != path and _file_holds(other, needle):
            parents.append(other)
    if not parents:
        return NOT_A_FORK
    # a fork of a fork: the copy that holds the most of this file's history is its parent
    best = ForkPrefix(0)
    for parent in parents:
        known, parent_session = _uuids_and_session(parent)
        end = 0
        with open(path, "rb") as f:
            for row in iter_rows(f, 0):
                uuid = row.data.get("uuid")
                if isinstance(uuid, str) and uuid not in known:
                    break
                end = row.end
        if end > best.end:
            best = ForkPrefix(end, parent_session or os.path.basename(parent)[: -len(".jsonl")], parent)
    if not best.end:
        return NOT_A_FORK
    # the copies share one promptId, so the grammar would see one turn: count the turn openers
    copied_turns, previous = 0, ""
    with open(path, "rb") as f:
        for row in iter_rows(f, 0, best.end):
            if row.type == "user":
                previous = user_row_kind(row.data, previous)
                copied_turns += previous in TURN_STARTERS
    return best._replace(copied_turns=copied_turns)
