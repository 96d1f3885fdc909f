"""`doctor`: the hook registration checks (the server checks are covered by the delivery tests' stand-in)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

HOOK = str(pathlib.Path(__file__).resolve().parent.parent / "hooks" / "langfuse_hook.py")
OLD_COMMAND = '"/home/u/.claude/langfuse/venv/bin/python" -m langfuse_hook'
NEW_COMMAND = '"/home/u/.claude/langfuse/venv/bin/python" -I "/home/u/.claude/langfuse/langfuse_hook.py"'


def doctor(tmp_path, command: str) -> str:
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    hooks = {e: [{"hooks": [{"type": "command", "command": command}]}] for e in ("Stop", "SubagentStop", "SessionEnd")}
    (home / ".claude" / "settings.json").write_text(json.dumps({"hooks": hooks}))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "CC_LANGFUSE_BASE_URL": "http://127.0.0.1:9",
        "CC_LANGFUSE_RETRY_FOR": "0",  # the worker does not stay to retry the closed port
        "CC_LANGFUSE_PUBLIC_KEY": "pk-lf-x",
        "CC_LANGFUSE_SECRET_KEY": "sk-lf-x",
        "CC_LANGFUSE_STATE_DIR": str(tmp_path / "state"),
    }
    proc = subprocess.run([sys.executable, "-I", HOOK, "doctor"], env=env, capture_output=True, text=True, timeout=60)
    return proc.stdout + proc.stderr


@pytest.mark.parametrize(("command", "unsafe"), [(OLD_COMMAND, True), (NEW_COMMAND, False)])
def test_doctor_flags_a_hook_registered_with_dash_m(tmp_path, command, unsafe):
    out = doctor(tmp_path, command)
    assert "hook registered in Claude Code" in out
    assert ("hook command safe from project files" in out) is unsafe, out
    if unsafe:
        assert "rerun scripts/install-hook.sh" in out
