"""Drive the real Claude Code CLI interactively through a pseudo-terminal (permission dialogs exist
only there: `-p` cannot show one, so a real user approval or rejection needs this).

    home_for_interactive(home, project)        # onboarding done, the project trusted
    term = Terminal([claude_cli, "--permission-mode", "default"], project, env)
    term.wait_for(READY); term.say("write f.txt please"); term.wait_for(DIALOG); term.type("1")
    ...; term.exit()
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import time
from pathlib import Path

import pytest

ANSI = re.compile(r"\x1b\[[0-9;?<>]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-Za-z]|\x1b[=>]")
READY = r"\? for shortcuts|❯"  # the input box is there
DIALOG = r"1\. Yes"  # a permission dialog is open


def home_for_interactive(home: Path, project: Path) -> None:
    """~/.claude.json of a user who finished onboarding, approved the test API key and trusts `project`."""
    (home / ".claude").mkdir(parents=True, exist_ok=True)
    (home / ".claude.json").write_text(
        json.dumps(
            {
                "hasCompletedOnboarding": True,
                "theme": "dark",
                "customApiKeyResponses": {"approved": ["sk-ant-fake-test-key"[-20:]], "rejected": []},
                "projects": {str(project): {"hasTrustDialogAccepted": True, "hasCompletedProjectOnboarding": True}},
            }
        )
    )


class Terminal:
    """One CLI process in a pty: wait for text on the screen (ANSI stripped), type keys."""

    def __init__(self, argv: list[str], cwd: Path, env: dict):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: Claude Code in the terminal
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        self.screen = ""

    def wait_for(self, pattern: str, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    self.screen += ANSI.sub("", os.read(self.fd, 65536).decode(errors="replace"))
                except OSError:
                    break
                if re.search(pattern, self.screen):
                    self.screen = ""
                    return
        pytest.fail(f"the terminal never showed {pattern!r}; last output:\n{self.screen[-2000:]}")

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())
        time.sleep(0.3)  # the input box takes keys, then Enter separately

    def say(self, prompt: str) -> None:
        """Type a prompt and send it."""
        self.type(prompt)
        self.type("\r")

    def exit(self) -> None:
        """/exit, as a user ends the session (SessionEnd fires with reason prompt_input_exit)."""
        self.say("/exit")
        time.sleep(2)

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
            os.waitpid(self.pid, 0)
        except OSError:
            pass
        os.close(self.fd)
