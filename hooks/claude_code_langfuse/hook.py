"""The critical path: what runs inside Claude Code's hook call, for every registered event.

Constant work whatever the size of the session: record the event as received in the inbox, make
sure one detached worker is running, exit. Nothing here reads the transcript or parses the event
(the worker checks it: inbox.read_news), and nothing imports `json`, `re`, `collections`, the SDK,
OpenTelemetry or an HTTP client: start-up is most of a hook's cost (docs/benchmarks.md; a test
asserts what is imported). Prints nothing, exits 0.
"""

import os
import sys

from .config import LazyLog, ensure_state_dir, hook_settings
from .files import Paths
from .inbox import looks_like_event, write_news
from .runtime import wake_worker

MAX_EVENT_BYTES = 64 * 1024 * 1024


def hook_main() -> None:
    """Hook mode: whatever happens, print nothing and exit 0."""
    os.umask(0o077)
    settings = log = None
    try:
        data = sys.stdin.buffer.read(MAX_EVENT_BYTES)
        settings = hook_settings()
        log = LazyLog(settings, stderr=False)
        if not settings.state_dir:
            return  # nowhere to keep anything (`status` says why); never the working directory
        if not looks_like_event(data):
            log.error("ignored a hook call: hook stdin is not a JSON object; is this file registered as a command hook?")
            return
        paths = Paths(settings.state_dir)
        ensure_state_dir(paths.dir)
        write_news(paths.inbox, data, os.environ)
        wake_worker(paths, log, settings.fingerprint)
    except BaseException as e:  # the hook must never hurt Claude Code
        try:
            (log or LazyLog(settings or hook_settings(), stderr=False)).exception(
                "hook failed: %s (the transcript keeps the data; the next event retries)", e
            )
        except BaseException:
            pass
