"""The /langfuse command on the script install path (issue 11 point 4): install writes
~/.claude/commands/langfuse.md pointing at the venv and the installed entry, never over a user's own
langfuse.md; uninstall removes ours only; the real CLI runs the installed command."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from fake_messages_api import reply, text
from fixtures_claude_cli import run_claude
from test_install import INSTALL, UNINSTALL, env_file, home, ok, pip_installed_home, run  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import settings_merge  # noqa: E402

sys.path.remove(str(REPO / "scripts"))
PLUGIN_COMMAND = REPO / "commands" / "langfuse.md"


def test_render_points_at_the_venv_and_the_installed_entry(tmp_path):
    places = settings_merge.Places(str(tmp_path))
    out = settings_merge.render_slash_command(PLUGIN_COMMAND.read_text(), places)
    run_line = f"!`{shlex.quote(str(places.venv_python))} -I {shlex.quote(str(places.hook))} slash $ARGUMENTS`"
    assert run_line in out
    assert f"allowed-tools: Bash({shlex.quote(str(places.venv_python))} -I:*)" in out
    assert "CLAUDE_PLUGIN_ROOT" not in out and "python3" not in out
    assert settings_merge.is_our_slash_command(PLUGIN_COMMAND)


def test_install_writes_it_uninstall_removes_it_a_users_own_is_kept(home, env_file):  # noqa: F811
    cmd = home / ".claude" / "commands" / "langfuse.md"
    r = ok(run(INSTALL, home, "--env-file", str(env_file)))
    assert "the /langfuse command" in r.stdout
    places = settings_merge.Places(str(home))
    assert cmd.read_text() == settings_merge.render_slash_command(PLUGIN_COMMAND.read_text(), places)
    # the installed command runs: it prints the one screen (no Claude Code needed for that part)
    line = next(ln for ln in cmd.read_text().splitlines() if ln.startswith("!`"))[2:-1].replace("$ARGUMENTS", "")
    import subprocess

    out = subprocess.run(["bash", "-c", line], env={"HOME": str(home), "CLAUDE_CODE_SESSION_ID": "s-1", "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0 and "this session  s-1" in out.stdout, out.stderr
    r = ok(run(INSTALL, home, "--env-file", str(env_file)))
    assert "the /langfuse command" not in r.stdout  # unchanged: not written again
    ok(run(UNINSTALL, home))
    assert not cmd.exists()
    mine = "---\ndescription: my own langfuse notes\n---\nhello\n"
    cmd.parent.mkdir(parents=True, exist_ok=True)
    cmd.write_text(mine)
    r = ok(run(INSTALL, home, "--env-file", str(env_file)))
    assert "is not ours" in r.stderr and cmd.read_text() == mine
    ok(run(UNINSTALL, home))
    assert cmd.read_text() == mine


def test_real_cli_runs_the_installed_command(tmp_path, claude_cli):
    """The installer's form (absolute python and entry, allowed-tools on that python) runs in Claude Code 2.1.328."""
    cli_home = tmp_path / "home"
    places = settings_merge.Places(str(cli_home))
    places.venv_python = Path(sys.executable)
    places.hook = REPO / "hooks" / "langfuse_hook.py"
    cmd = cli_home / ".claude" / "commands" / "langfuse.md"
    cmd.parent.mkdir(parents=True)
    cmd.write_text(settings_merge.render_slash_command(PLUGIN_COMMAND.read_text(), places))
    project = tmp_path / "proj"
    project.mkdir()
    log = tmp_path / "requests.jsonl"
    run_claude(cli_home, project, "/langfuse", [reply(text("ok"))], env={"CC_LANGFUSE_STATE_DIR": str(tmp_path / "state")}, request_log=log)
    bodies = [json.loads(line) for line in log.read_text().splitlines()]
    prompt = json.dumps([b for b in bodies if b.get("kind") == "main"][0]["body"]["messages"][-1])
    assert "Langfuse tracing" in prompt and "this session" in prompt, prompt[-2000:]
    assert "queue" in prompt and "last delivery" in prompt
