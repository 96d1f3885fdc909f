"""The inbox: one small file per hook event, written by the hook, consumed by the worker.

A news file says "this transcript has news" and carries what the event knows that the transcript
may not yet (`last_assistant_message`, `prompt_id`, agent ids) plus the tracing settings of the
process that fired it (a project's `.claude/settings.local.json` env reaches only that process),
never a secret key.
Files are named by arrival time, so sorting the names gives the order events fired in.

Not fsynced on purpose: the transcript is the durable record and the cursor says what was read,
so a news file lost in a power cut only delays that session's turns to its next event, `drain`
or `backfill`; no turn is lost.
"""

from __future__ import annotations

import json
import os
import time

from .files import write_all

# Variables that change what tracing does; the hook records them with each event.
SETTINGS_PREFIXES = ("CC_LANGFUSE_", "LANGFUSE_", "CLAUDE_PLUGIN_OPTION_")
SETTINGS_NAMES = ("TRACE_TO_LANGFUSE",)
NEWS_VERSION = 1
# CI facts the worker puts into trace metadata (records.ci_metadata). Only these names are read,
# one lookup each (constant work); none of them is a secret (no token, no password variable).
CI_NAMES = (
    "CI",
    "GITHUB_ACTIONS",
    "GITHUB_REPOSITORY",
    "GITHUB_WORKFLOW",
    "GITHUB_RUN_ID",
    "GITHUB_RUN_ATTEMPT",
    "GITHUB_SERVER_URL",
    "GITHUB_SHA",
    "GITHUB_REF",
    "GITHUB_EVENT_NAME",
    "GITLAB_CI",
    "CI_PROJECT_PATH",
    "CI_PIPELINE_ID",
    "CI_PIPELINE_URL",
    "CI_JOB_ID",
    "CI_JOB_URL",
    "CI_COMMIT_SHA",
    "CI_MERGE_REQUEST_IID",
)
MAX_CI_VALUE_CHARS = 500


def is_secret_setting(name: str) -> bool:
    return "SECRET" in name


def settings_env(environ) -> dict:
    """The tracing settings of the event's process, secrets left out: the worker keeps its own (and
    a hook whose keys differ from the running worker's starts a new worker, see runtime.wake_worker)."""
    return {k: v for k, v in environ.items() if (k.startswith(SETTINGS_PREFIXES) or k in SETTINGS_NAMES) and not is_secret_setting(k)}


def ci_env(environ) -> dict:
    """The CI variables of the event's process (CI_NAMES only), each cut to a sane length."""
    out = {}
    for name in CI_NAMES:
        value = environ.get(name)
        if value:
            out[name] = value[:MAX_CI_VALUE_CHARS]
    return out


def input_digest(value) -> str:
    """A tool input's fingerprint (PermissionRequest has no tool_use_id: the worker matches it to
    the transcript's tool_use by this), so the input itself (a Write's content) never reaches disk."""
    try:  # the builtin module: hashlib would load OpenSSL (~3 ms of every hook event)
        from _sha256 import sha256
    except ImportError:  # Python 3.12+ renamed it
        try:
            from _sha2 import sha256
        except ImportError:
            from hashlib import sha256
    data = json.dumps(value, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return sha256(data.encode("ascii")).hexdigest()[:16]


def write_news(inbox_dir: str, event: dict, environ) -> str:
    """Atomically add one news file (tmp + rename: the worker never sees half of one)."""
    try:
        os.mkdir(inbox_dir, 0o700)
    except FileExistsError:
        pass
    now = time.time_ns()
    name = f"{now:020d}-{os.getpid()}.json"
    data = json.dumps(
        {"v": NEWS_VERSION, "received": now / 1e9, "event": event, "env": settings_env(environ), "ci": ci_env(environ)}
    )  # ASCII: a lone surrogate stays an escape
    tmp = os.path.join(inbox_dir, "." + name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        write_all(fd, data.encode("ascii"))
    finally:
        os.close(fd)
    final = os.path.join(inbox_dir, name)
    os.rename(tmp, final)
    return final


def list_news(inbox_dir: str) -> list[str]:
    """News file names, oldest first."""
    try:
        return sorted(n for n in os.listdir(inbox_dir) if n.endswith(".json") and not n.startswith("."))
    except FileNotFoundError:
        return []


def read_news(path: str) -> dict | None:
    """A news record, or None for a file that is unreadable or not one of ours."""
    try:
        with open(path, "rb") as f:
            news = json.loads(f.read().decode("utf-8", "replace"))
    except (OSError, ValueError):
        return None
    if not isinstance(news, dict) or not isinstance(news.get("event"), dict):
        return None
    if not isinstance(news.get("env"), dict):
        news["env"] = {}
    if not isinstance(news.get("ci"), dict):
        news["ci"] = {}
    return news


def remove_news(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
