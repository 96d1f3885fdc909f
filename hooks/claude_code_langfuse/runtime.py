"""Which interpreter and which file run our background processes, and how they are started.

Shared by the hook (it wakes the worker), the worker (the plugin's first-use bootstrap) and the
commands (the `status` advice names the command a user can paste).
"""

import os
import sys

from .config import sha256_hex
from .files import FileLock, Paths, write_atomic

LANGFUSE_REQUIREMENT = "langfuse>=5,<6"
# the price source of `models sync` and `insights --source local` (kept equal to pyproject.toml's dependencies)
PRICES_REQUIREMENT = "genai-prices>=0.2.3,<0.3"
RUNTIME_REQUIREMENTS = (LANGFUSE_REQUIREMENT, PRICES_REQUIREMENT)

# The one file users register: the thin entry beside this package.
ENTRY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "langfuse_hook.py")


def plugin_venv() -> str:
    data = os.environ.get("CLAUDE_PLUGIN_DATA")
    return os.path.join(data, "venv") if data and os.path.isabs(data) else ""  # never a venv in the working directory


def sender_python() -> str:
    """The interpreter with the SDK: the plugin's venv when run as a plugin, else our own."""
    venv = plugin_venv()
    if not venv:
        return sys.executable
    python = os.path.join(venv, "bin", "python")
    return python if os.access(python, os.X_OK) and os.path.exists(os.path.join(venv, ".langfuse-ready")) else ""


def entry_argv(python: str, *args: str) -> list[str]:
    """argv that runs the entry safely: -I keeps the user's working directory (a project holding
    a json.py or langfuse_hook.py), PYTHONPATH and user site-packages out of sys.path."""
    return [python, "-I", ENTRY, *args]


def self_command() -> str:
    """How a user runs our subcommands: the interpreter that has the SDK, then the entry file."""
    import shlex

    return " ".join(shlex.quote(a) for a in entry_argv(sender_python() or sys.executable))


def spawn_detached(argv: list[str], log) -> bool:
    """A child that outlives Claude Code (own session, no terminal, no pipes back to the hook)."""
    # posix_spawn, not subprocess: the hook then needs no subprocess import (a few ms of every
    # event). Our own descriptors are close-on-exec (PEP 446); 0-2 go to /dev/null, so Claude Code
    # never waits on a pipe the worker holds; setsid detaches it from the session.
    null = os.devnull
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, null, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, null, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, null, os.O_WRONLY, 0),
    ]
    try:
        os.posix_spawn(argv[0], argv, dict(os.environ), file_actions=actions, setsid=True)
        return True
    except (OSError, AttributeError, TypeError) as e:
        log.error("could not start %s (%s); the news and the queue are kept; run `%s drain`", argv[-1], e, self_command())
        return False


def cache_bytecode(log) -> None:
    """A read-only install keeps its bytecode under sys.pycache_prefix (see __init__), and Python
    writes it there as modules load, unless PYTHONDONTWRITEBYTECODE (or -B) forbids it: then every
    hook event would compile its modules from source. The worker compiles the package there once
    (compileall writes whatever sys.dont_write_bytecode says and skips what is up to date)."""
    if not sys.pycache_prefix or not sys.dont_write_bytecode:
        return
    try:
        import compileall

        if not compileall.compile_dir(os.path.dirname(os.path.abspath(__file__)), maxlevels=0, quiet=2):
            log.warning("could not compile every module into %s; hook events compile them from source", sys.pycache_prefix)
    except Exception as e:  # a speed-up only: never a reason to stop the worker
        log.warning("could not compile the package into %s: %s", sys.pycache_prefix, e)


def key_fingerprint(public_key: str, secret_key: str, base_url: str) -> str:
    """Which Langfuse keys a process sends with, without the secret (safe to write to a file)."""
    return sha256_hex(f"{public_key}:{secret_key}:{base_url}".encode())[:16]


# ============================================================================ the plugin's first-use setup

MIN_PYTHON = (3, 11)
BOOTSTRAP_FIRST_BACKOFF_S = 30.0  # a failed setup (venv, pip) is tried again after this, doubling
BOOTSTRAP_MAX_BACKOFF_S = 3600.0
OLD_PYTHON_ADVICE = (
    "the plugin needs Python {need} or newer as `python3` on Claude Code's PATH: install one (e.g. `sudo apt-get install "
    "python3.11`, `brew install python@3.12`) and make it `python3`, or install with scripts/install-hook.sh instead (it "
    "brings its own venv); the hook events wait in {inbox}, nothing is lost"
)
VENV_ADVICE = (
    "`{python} -m venv` does not work here: on Debian/Ubuntu install the venv module (`sudo apt-get install python3-venv`, or "
    "python3.X-venv for your version); the queue is kept"
)
PIP_ADVICE = (
    "pip could not install {requirement} into {venv} (see the detail): check the network, a proxy (HTTPS_PROXY) or the "
    "package index (PIP_INDEX_URL); the queue is kept"
)


def python_id() -> str:
    """Which interpreter ran the setup: a failure is retried at once when this changes."""
    return f"{sys.executable} {'.'.join(str(x) for x in sys.version_info[:3])}"


def _read_status(paths: Paths) -> dict:
    import json

    try:
        with open(paths.sender_status, "rb") as f:
            status = json.loads(f.read().decode("utf-8", "replace"))
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def bootstrap_waits(paths: Paths) -> dict | None:
    """The recorded setup failure while its back-off runs (for this same interpreter), else None."""
    import time

    err = _read_status(paths).get("bootstrap_error")
    if not isinstance(err, dict) or err.get("python") != python_id():
        return None
    try:
        return err if time.time() < float(err.get("next_attempt_epoch") or 0) else None
    except (TypeError, ValueError):
        return None


def note_bootstrap(paths: Paths, log, kind: str = "", detail: str = "", advice: str = "") -> None:
    """Record a failed setup in the sender status file (kind "" = it worked: clear it), with a
    doubling back-off, and log it: `status` and `doctor` show it with how to fix it."""
    import json
    import time

    status = _read_status(paths)
    before = status.get("bootstrap_error") if isinstance(status.get("bootstrap_error"), dict) else {}
    if not kind:
        if not before:
            return
        status["bootstrap_error"] = None
    else:
        same = before.get("python") == python_id()
        try:
            failures = (int(before.get("failures") or 0) if same else 0) + 1
        except (TypeError, ValueError):
            failures = 1
        wait = min(BOOTSTRAP_MAX_BACKOFF_S, BOOTSTRAP_FIRST_BACKOFF_S * 2 ** min(failures - 1, 20))
        status["bootstrap_error"] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "kind": kind,
            "detail": " ".join(detail.split())[-800:],  # pip's output is many lines: status shows one
            "advice": advice,
            "python": python_id(),
            "plugin_data": os.environ.get("CLAUDE_PLUGIN_DATA") or "",
            "failures": failures,
            "next_attempt_epoch": time.time() + wait,
        }
        log.error("plugin setup failed (%s, %d time(s)): %s; %s; tried again in %d s", kind, failures, detail[-300:], advice, wait)
    try:
        write_atomic(paths.sender_status, json.dumps(status, ensure_ascii=False, indent=1).encode())
    except OSError:
        pass


def wake_worker(paths: Paths, log, keys: str = "") -> None:
    """Start the detached worker unless one runs (it polls the inbox until it has been idle a while).

    `keys` is this event's fingerprint of the key and URL settings and the config file
    (config.hook_settings): a running worker whose fingerprint differs (the user fixed the keys
    since it started; the secret itself is never written into the inbox) is taken over by a new
    worker started from this process, whose environment and config file it then reads.
    """
    probe = FileLock(paths.worker_lock, timeout=0)
    if probe.acquire(blocking=False):
        probe.release()
        args: tuple = ()
    else:
        try:
            with open(paths.worker_keys, "rb") as f:  # bytes: a text open would import a codec module
                running_keys = f.read().strip().decode("ascii")
        except (OSError, ValueError):
            running_keys = keys  # a worker starting up: it reads the config and env as we do
        if not keys or running_keys == keys:
            return
        args = ("--takeover",)
    python, command = sender_python(), "worker"
    if not python:
        # plugin install without its venv yet: the bootstrap builds it, then runs the worker
        if sys.version_info < MIN_PYTHON:  # it could not even import the worker: say why, once per back-off
            if not bootstrap_waits(paths):
                version = ".".join(str(x) for x in sys.version_info[:3])
                note_bootstrap(
                    paths,
                    log,
                    "python",
                    f"python3 is Python {version} ({sys.executable})",
                    OLD_PYTHON_ADVICE.format(need=".".join(map(str, MIN_PYTHON)), inbox=paths.inbox),
                )
            return
        python, command = sys.executable, "bootstrap"
    spawn_detached(entry_argv(python, command, *args), log)
