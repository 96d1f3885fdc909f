"""A hook event as the worker reads it: the fields of Claude Code's hook payload it uses."""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

from .inbox import BadEvent

# ============================================================================ event


class HookEvent(NamedTuple):
    name: str
    session_id: str
    transcript_path: str
    cwd: str = ""
    prompt_id: str = ""
    last_assistant_message: str | None = None
    stop_hook_active: bool = False
    agent_id: str = ""
    agent_transcript_path: str = ""
    permission_mode: str = ""
    raw: Any = None


def parse_event(data: bytes) -> HookEvent:
    try:
        obj = json.loads(data.decode("utf-8", errors="replace") or "null")
    except ValueError as e:
        raise BadEvent(f"hook stdin is not JSON ({e}); is this file registered as a command hook?") from None
    return event_from_dict(obj)


def event_from_dict(obj: Any) -> HookEvent:
    if not isinstance(obj, dict):
        raise BadEvent("hook stdin is not a JSON object")
    path = obj.get("transcript_path") or ""
    session = obj.get("session_id") or ""
    if not isinstance(path, str) or not isinstance(session, str) or not path or not session:
        raise BadEvent("hook event has no transcript_path/session_id")
    lam = obj.get("last_assistant_message")
    return HookEvent(
        name=str(obj.get("hook_event_name") or ""),
        session_id=session,
        transcript_path=os.path.expanduser(path),
        cwd=str(obj.get("cwd") or ""),
        prompt_id=str(obj.get("prompt_id") or ""),
        last_assistant_message=lam if isinstance(lam, str) else None,
        stop_hook_active=bool(obj.get("stop_hook_active")),
        agent_id=str(obj.get("agent_id") or ""),
        agent_transcript_path=os.path.expanduser(str(obj.get("agent_transcript_path") or "")),
        permission_mode=str(obj.get("permission_mode") or ""),
        raw=obj,
    )
