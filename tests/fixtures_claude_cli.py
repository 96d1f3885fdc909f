"""Fixtures and helpers to run the REAL Claude Code CLI offline against tests/fake_messages_api.py.

    def test_something(claude_cli, claude_home, claude_project):
        cmd = hook_command(sys.executable, "hooks/langfuse_hook.py")
        write_hook_settings(claude_home, {event: [cmd] for event in HOOK_EVENTS})
        run = run_claude(claude_home, claude_project, "say hi", [reply("Hi!")])
        result, session_id, transcript = run        # also run.api (requests), run.stderr, ...

The CLI gets a clean environment (no inherited ANTHROPIC_*, LANGFUSE_*, CC_LANGFUSE_* or
CLAUDE_* variables): only PATH/LANG/TMPDIR, the variables below and what the test passes in ``env``.
Set CLAUDE_CLI=/path/to/claude to use an existing 2.1.328 binary instead of installing one.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping

import pytest
from fake_messages_api import FakeMessagesAPI, Script

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install-claude-cli.sh"
CLAUDE_VERSION = "2.1.328"
HOOK_EVENTS = ("Stop", "SubagentStop", "SessionEnd")
DEFAULT_ALLOWED_TOOLS = "Bash Read Agent"

_install: dict = {}


def install_claude_cli() -> str:
    """Path of a working claude binary (installing it once per process); raises RuntimeError."""
    if "path" in _install:
        return _install["path"]
    if "error" in _install:
        raise RuntimeError(_install["error"])
    override = os.environ.get("CLAUDE_CLI")
    try:
        if override:
            path = override
        else:
            proc = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                raise RuntimeError("scripts/install-claude-cli.sh failed: " + (proc.stderr.strip()[-2000:] or "no output"))
            path = proc.stdout.strip().splitlines()[-1]
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60).stdout
        if not version.startswith(CLAUDE_VERSION):
            raise RuntimeError("%s --version says %r, the tests expect %s" % (path, version.strip(), CLAUDE_VERSION))
    except (OSError, subprocess.SubprocessError, RuntimeError, IndexError) as exc:
        _install["error"] = "cannot get Claude Code %s: %s" % (CLAUDE_VERSION, exc)
        raise RuntimeError(_install["error"]) from exc
    _install["path"] = path
    return path


@pytest.fixture(scope="session")
def claude_cli() -> str:
    """Path of the installed claude 2.1.328 binary; skips the test when it cannot be installed."""
    try:
        return install_claude_cli()
    except RuntimeError as exc:
        pytest.skip(str(exc) + " (needs npm and the npm registry; or set CLAUDE_CLI)")


@pytest.fixture
def claude_home(tmp_path) -> pathlib.Path:
    """An empty HOME for one CLI session, with ~/.claude/ created."""
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    return home


@pytest.fixture
def claude_project(tmp_path) -> pathlib.Path:
    """The working directory the CLI is launched in."""
    project = tmp_path / "project"
    project.mkdir()
    return project


def write_hook_settings(home: os.PathLike, hooks: Mapping[str, Iterable[str | dict]], extra: Mapping | None = None) -> pathlib.Path:
    """Register command hooks in <home>/.claude/settings.json, keeping what is already there.

    ``hooks``: {event: [command string, or a handler dict like {"type": "command", "command": ...,
    "timeout": 30}]}. Events: Stop, SubagentStop, SessionEnd (any Claude Code event works).
    ``extra``: other top-level settings keys to set (e.g. {"env": {...}})."""
    path = pathlib.Path(home) / ".claude" / "settings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = json.loads(path.read_text()) if path.exists() else {}
    registered = settings.setdefault("hooks", {})
    for event, handlers in hooks.items():
        group = {"hooks": [{"type": "command", "command": h} if isinstance(h, str) else dict(h) for h in handlers]}
        registered.setdefault(event, []).append(group)
    settings.update(extra or {})
    path.write_text(json.dumps(settings, indent=2))
    return path


def claude_env(home: os.PathLike, base_url: str, env: Mapping[str, str] | None = None) -> dict:
    """The environment the CLI runs with: offline, telemetry off, HOME = the test's home."""
    out = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TMPDIR") if k in os.environ}
    out.update(
        {
            "HOME": str(home),
            "ANTHROPIC_BASE_URL": base_url,
            "ANTHROPIC_API_KEY": "sk-ant-fake-test-key",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
    )
    out.update(env or {})
    # Background agents write <TMPDIR>/claude-<uid>/... output files: keep them inside the test's dir.
    if "TMPDIR" not in (env or {}):
        out["TMPDIR"] = str(pathlib.Path(home) / "tmp")
        os.makedirs(out["TMPDIR"], exist_ok=True)
    return out


def hook_command(*argv: os.PathLike | str) -> str:
    """A shell-safe command string for settings.json, e.g. hook_command(sys.executable, hook_path)."""
    return shlex.join(str(a) for a in argv)


class ClaudeRun:
    """Outcome of one `claude -p` run. Unpacks as (result, session_id, transcript)."""

    def __init__(self, **kw):
        self.result: dict = kw["result"]
        self.session_id: str = kw["session_id"]
        self.transcript: pathlib.Path | None = kw["transcript"]
        self.api: FakeMessagesAPI = kw["api"]
        self.returncode: int = kw["returncode"]
        self.stdout: str = kw["stdout"]
        self.stderr: str = kw["stderr"]
        self.duration: float = kw["duration"]
        self.argv: list = kw["argv"]

    def __iter__(self):
        return iter((self.result, self.session_id, self.transcript))

    def lines(self) -> list[dict]:
        """The transcript's JSON lines (complete lines only)."""
        return read_jsonl(self.transcript) if self.transcript else []


def read_jsonl(path: os.PathLike) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.endswith("\n") and line.strip():
                rows.append(json.loads(line))
    return rows


def find_transcript(home: os.PathLike, session_id: str) -> pathlib.Path | None:
    found = sorted((pathlib.Path(home) / ".claude" / "projects").glob("*/%s.jsonl" % session_id))
    return found[0] if found else None


def run_claude(
    home: os.PathLike,
    cwd: os.PathLike,
    prompt: str,
    script: Script | list | None,
    resume: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    *,
    claude: str | None = None,
    allowed_tools: str = DEFAULT_ALLOWED_TOOLS,
    extra_args: Iterable[str] = (),
    check: bool = True,
    request_log: os.PathLike | None = None,
) -> ClaudeRun:
    """Run one `claude -p` turn against a fresh fake Messages API serving ``script``.

    Fails the test (with the CLI's stderr/stdout) when the CLI times out, exits non-zero, prints
    no JSON result, or reports is_error — unless check=False. ``request_log``: also append every
    API request as a JSON line to this file."""
    binary = claude or install_claude_cli()
    argv = [binary, "-p", prompt, "--output-format", "json", "--allowedTools", allowed_tools]
    if resume:
        argv += ["--resume", resume]
    argv += list(extra_args)
    with FakeMessagesAPI(script, log_path=str(request_log) if request_log else None) as api:
        started = time.monotonic()
        proc = subprocess.Popen(
            argv,
            cwd=str(cwd),
            env=claude_env(home, api.url, env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # The CLI may have spawned hooks/tools: kill its whole process group, not just it.
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            pytest.fail(
                "claude -p timed out after %ss\nstderr:\n%s\nstdout:\n%s\nAPI requests: %d"
                % (timeout, stderr[-4000:], stdout[-2000:], len(api.requests))
            )
        duration = time.monotonic() - started
    try:
        result = json.loads(stdout) if stdout.strip() else {}
    except ValueError:
        result = {}
    session_id = result.get("session_id") or resume or ""
    run = ClaudeRun(
        result=result,
        session_id=session_id,
        transcript=find_transcript(home, session_id) if session_id else None,
        api=api,
        returncode=proc.returncode,
        stdout=stdout,
        stderr=stderr,
        duration=duration,
        argv=argv,
    )
    if check and (proc.returncode != 0 or not result or result.get("is_error")):
        pytest.fail(
            "claude -p failed (exit %s)\nstderr:\n%s\nstdout:\n%s\nunused script replies: %s"
            % (proc.returncode, stderr[-4000:], stdout[-4000:], api.unused())
        )
    return run
