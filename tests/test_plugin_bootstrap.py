"""The plugin's first-use setup backs off when it fails, and says why (issue 9, item 4).

As a plugin, the hook runs with `python3` and builds ${CLAUDE_PLUGIN_DATA}/venv (with the
langfuse SDK) on first use, in a detached bootstrap. When that fails (a `python3` older than
3.11, no venv module, pip unable to install) it must not be tried again on every event: it
backs off (30 s, doubling, at most an hour), the failure is in the sender status file, and
`status` / `doctor` say what failed, how to fix it, and when it is tried again. The turns are
queued meanwhile (the bootstrap reads the transcript before it builds anything).
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest
from test_delivery import wait_for as delivery_wait_for
from transcript_factory import Transcript, stop_event, wait_for_worker

HOOK = str(pathlib.Path(__file__).resolve().parent.parent / "hooks" / "langfuse_hook.py")
WAIT_S = 120.0  # creating a venv takes seconds; a pass never comes near this


def wait_for(condition, what: str, timeout: float = WAIT_S):
    return delivery_wait_for(condition, what, timeout)


class Plugin:
    """A user of the plugin install: HOME, ${CLAUDE_PLUGIN_DATA}, no venv yet, pip that cannot install."""

    def __init__(self, tmp_path: pathlib.Path):
        self.home = tmp_path / "home"
        self.data = tmp_path / "plugin-data"
        self.state = self.home / ".claude" / "state"
        self.home.mkdir()
        self.data.mkdir()
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.home),
            "CLAUDE_PLUGIN_DATA": str(self.data),
            "CLAUDE_PLUGIN_ROOT": str(pathlib.Path(HOOK).parent.parent),
            "CLAUDE_PLUGIN_OPTION_PUBLIC_KEY": "pk-lf-plugin",
            "CLAUDE_PLUGIN_OPTION_BASE_URL": "http://127.0.0.1:9",
            "CC_LANGFUSE_RETRY_FOR": "0",  # the worker does not stay to retry the closed port
            "CC_LANGFUSE_USER_ID": "tester",
            # pip fails at once and for sure: no index, no config file that could name one
            "PIP_NO_INDEX": "1",
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }
        self.transcript = Transcript(str(self.home / ".claude" / "projects" / "-p" / "3c469540-beb0-4db7-b5e1-5bf71f36cd69.jsonl"))

    def turn(self, prompt: str, python_argv: list[str] | None = None) -> subprocess.CompletedProcess:
        self.transcript.simple_turn(prompt, f"answer to {prompt}")
        proc = subprocess.run(
            python_argv or [sys.executable, "-I", HOOK],
            input=json.dumps(stop_event(self.transcript)).encode(),
            env=self.env,
            capture_output=True,
            timeout=60,
            cwd=str(self.home),
        )
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b""), proc.stderr
        return proc

    def setup_error(self) -> dict | None:
        try:
            return json.loads((self.state / "langfuse_sender.json").read_text()).get("bootstrap_error")
        except (OSError, ValueError):
            return None

    def wait_bootstrap_done(self) -> None:
        """The detached bootstrap has read the events and let go of its lock (it has exited)."""
        wait_for_worker(self.state, timeout=WAIT_S)
        lock = self.data / "bootstrap.lock"

        def free() -> bool:
            if not lock.exists():
                return True
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                return True
            except OSError:
                return False
            finally:
                os.close(fd)

        wait_for(free, "the bootstrap to finish")

    def queued(self) -> list[str]:
        queue = self.state / "pending_traces.jsonl"
        return [json.loads(line)["trace"]["name"] for line in queue.read_text().splitlines()] if queue.exists() else []

    def log(self) -> str:
        log = self.state / "langfuse_hook.log"
        return log.read_text() if log.exists() else ""

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-I", HOOK, *args], env=self.env, capture_output=True, text=True, timeout=WAIT_S)


@pytest.fixture
def plugin(tmp_path):
    return Plugin(tmp_path)


def test_failed_pip_backs_off_is_shown_with_the_fix_and_retried_after_the_backoff(plugin):
    plugin.turn("first")
    error = wait_for(plugin.setup_error, "the failed setup to be recorded")
    plugin.wait_bootstrap_done()
    assert error["kind"] == "pip" and error["failures"] == 1, error
    assert 25 <= error["next_attempt_epoch"] - time.time() <= 31
    assert plugin.queued() == ["first"], "the turn is queued although the setup failed"
    assert plugin.log().count("creating the plugin venv") == 1

    status = plugin.cli("status")
    assert status.returncode == 0, status.stderr
    warning = next(line for line in status.stdout.splitlines() if "first-use setup failed" in line)
    assert "pip" in warning and "PIP_INDEX_URL" in warning and "bootstrap --now" in warning and "next Claude Code event from" in warning
    js = json.loads(plugin.cli("status", "--json").stdout)
    assert js["bootstrap_error"]["kind"] == "pip"
    doctor = plugin.cli("doctor")
    assert any("FAIL" in line and "plugin setup" in line for line in doctor.stdout.splitlines()), doctor.stdout

    # events during the back-off: queued, but no new venv and pip run
    plugin.turn("second")
    plugin.turn("third")
    plugin.wait_bootstrap_done()
    assert plugin.queued() == ["first", "second", "third"]
    assert plugin.log().count("creating the plugin venv") == 1, plugin.log()
    assert plugin.setup_error()["failures"] == 1

    # the back-off is over (moved into the past here): the next event tries again, and waits twice as long after
    status_file = plugin.state / "langfuse_sender.json"
    data = json.loads(status_file.read_text())
    data["bootstrap_error"]["next_attempt_epoch"] = time.time() - 1
    status_file.write_text(json.dumps(data))
    plugin.turn("fourth")
    wait_for(lambda: (plugin.setup_error() or {}).get("failures") == 2, "the second attempt")
    plugin.wait_bootstrap_done()
    error = plugin.setup_error()
    assert 55 <= error["next_attempt_epoch"] - time.time() <= 61, error
    assert plugin.log().count("creating the plugin venv") == 2

    # the way out status names: by hand, at once, whatever the back-off
    by_hand = plugin.cli("bootstrap", "--now")
    assert by_hand.returncode == 1
    assert plugin.setup_error()["failures"] == 3


def test_a_python3_older_than_3_11_is_reported_once_per_backoff_and_nothing_is_started(plugin):
    """hooks.json runs `python3`: an old one cannot even import the worker. The hook says so in
    the status file (once per back-off, not on every event) and starts nothing; the events wait."""
    old_python = [
        sys.executable,
        "-I",
        "-c",
        "import runpy, sys; sys.version_info = (3, 9, 18, 'final', 0); sys.argv = [sys.argv[1]]; runpy.run_path(sys.argv[0], run_name='__main__')",
        HOOK,
    ]
    plugin.turn("first", old_python)
    error = wait_for(plugin.setup_error, "the old python to be recorded", timeout=10)
    assert error["kind"] == "python" and "3.9.18" in error["detail"] and "3.11" in error["advice"], error
    plugin.turn("second", old_python)
    time.sleep(1.0)  # a bootstrap, had one been started, would have made the venv folder by now
    assert not (plugin.data / "venv").exists(), "a bootstrap ran with the old python"
    assert plugin.setup_error() == error, "recorded again within the back-off"
    assert plugin.log().count("plugin setup failed") == 1
    assert len([n for n in os.listdir(plugin.state / "inbox") if n.endswith(".json")]) == 2  # the events wait, nothing lost
    status = plugin.cli("status")
    warning = next(line for line in status.stdout.splitlines() if "first-use setup failed" in line)
    assert "Python 3.11 or newer" in warning and "3.9.18" in warning, warning
