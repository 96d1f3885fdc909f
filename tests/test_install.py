"""install-hook.sh / uninstall-hook.sh, each run in a temporary HOME with stdin closed.

The real `pip install` runs once per session (fixture `pip_installed_home`); other tests get a
copy of that virtualenv, which the installer must recognise as already satisfying the pin.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from transcript_factory import Transcript, stop_event, wait_for_worker

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "scripts" / "install-hook.sh"
UNINSTALL = REPO / "scripts" / "uninstall-hook.sh"
HOOK_SRC = REPO / "hooks" / "langfuse_hook.py"
PACKAGE_SRC = REPO / "hooks" / "claude_code_langfuse"
EVENTS = (
    "Stop",
    "SubagentStop",
    "SessionEnd",
    "StopFailure",
    "PermissionRequest",
    "PostToolUse",
    "PostToolUseFailure",
    "SubagentStart",
    "SessionStart",
)
ASYNC_EVENTS = ("PermissionRequest", "PostToolUse", "PostToolUseFailure", "SubagentStart", "SessionStart")  # facts only: nothing waits

pytestmark = pytest.mark.skipif(not HOOK_SRC.is_file(), reason="hook not written yet")

PK, SK = "pk-lf-test-public", "sk-lf-test-secret"


def _python_ok(p: str | None) -> bool:
    if not p or not os.path.exists(p):
        return False
    r = subprocess.run([p, "-c", "import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))"], capture_output=True)
    return r.returncode == 0


def _base_python() -> str:
    for cand in ("/usr/bin/python3", getattr(sys, "_base_executable", None), sys.executable):
        if _python_ok(cand):
            return os.path.realpath(cand)
    pytest.skip("no Python >= 3.11 with venv/ensurepip to build the hook's virtualenv")


BASE_PY = _base_python()


def run(script: Path, home: Path, *args: str, env: dict | None = None, python: str | None = BASE_PY) -> subprocess.CompletedProcess:
    """Run a script like a user on a fresh login would: clean env, no terminal, stdin closed."""
    e = {"HOME": str(home), "PATH": f"{Path(BASE_PY).parent}:/usr/bin:/bin", "LANG": "C.UTF-8"}
    e.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
    real_cache = Path.home() / ".cache" / "pip"
    if "PIP_CACHE_DIR" not in e and real_cache.is_dir():
        e["PIP_CACHE_DIR"] = str(real_cache)
    e.update(env or {})
    argv = ["bash", "-c", 'exec "$@" 0<&-', "bash", "bash", str(script), *args]
    if python:
        argv += ["--python", python]
    return subprocess.run(argv, env=e, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)


def write_env(path: Path, pk: str = PK, sk: str = SK, port: str | None = "3055") -> Path:
    lines = [
        "# written by generate-env.sh",
        f"LANGFUSE_INIT_PROJECT_PUBLIC_KEY={pk}",
        f"LANGFUSE_INIT_PROJECT_SECRET_KEY={sk}",
        "POSTGRES_PASSWORD=unrelated",
    ]
    if port:
        lines.append(f"LANGFUSE_PORT={port}")
    path.write_text("\n".join(lines) + "\n")
    return path


def command_for(home: Path) -> str:
    # by path with -I, never `-m`: the user's project (the working directory) stays off sys.path
    return f'"{home}/.claude/langfuse/venv/bin/python" -I "{home}/.claude/langfuse/langfuse_hook.py"'


def ours(home: Path, event: str = "Stop") -> dict:
    return {"type": "command", "command": command_for(home), **({"async": True} if event in ASYNC_EVENTS else {})}


def backups(home: Path) -> list[Path]:
    return sorted((home / ".claude").glob("settings.json.bak-*"))


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r


def modules(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.py")) if "__pycache__" not in p.parts}


def cache_tag(python: Path) -> str:
    r = subprocess.run([str(python), "-I", "-c", "import sys; print(sys.implementation.cache_tag)"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def purelib(python: Path) -> Path:
    r = subprocess.run(
        [str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    return Path(r.stdout.strip())


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def pip_installed_home(tmp_path_factory):
    """A fresh install with the real pip, done once and shared (read-only) by the session."""
    home = tmp_path_factory.mktemp("fresh-home")
    env_file = write_env(tmp_path_factory.mktemp("envdir") / ".env")
    r = run(INSTALL, home, "--env-file", str(env_file))
    return home, r


@pytest.fixture
def env_file(tmp_path):
    return write_env(tmp_path / "dot.env")


@pytest.fixture
def home(tmp_path, pip_installed_home):
    """A temp HOME that already holds a copy of the session's virtualenv."""
    ok(pip_installed_home[1])
    h = tmp_path / "home"
    seed_venv(pip_installed_home[0], h)
    return h


def seed_venv(src_home: Path, dst_home: Path) -> None:
    src = src_home / ".claude" / "langfuse" / "venv"
    dst = dst_home / ".claude" / "langfuse" / "venv"
    dst.parent.mkdir(parents=True)
    try:
        shutil.copytree(src, dst, symlinks=True, copy_function=os.link)
    except OSError:
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst, symlinks=True)


# --------------------------------------------------------------------------- install


def test_fresh_install_with_real_pip(pip_installed_home):
    home, r = pip_installed_home
    ok(r)
    lf = home / ".claude" / "langfuse"
    vpy = lf / "venv" / "bin" / "python"
    v = subprocess.run(
        [str(vpy), "-c", "import langfuse, importlib.metadata as m; print(m.version('langfuse'))"], capture_output=True, text=True
    )
    assert v.returncode == 0, v.stderr
    assert v.stdout.strip().split(".")[0] == "5"

    assert (lf / "langfuse_hook.py").read_bytes() == HOOK_SRC.read_bytes()
    assert mode(lf / "langfuse_hook.py") == 0o644
    # the entry imports the package beside it: every module, nothing else, files 0644 in a 0700 folder
    pkg = lf / "claude_code_langfuse"
    assert modules(pkg) == modules(PACKAGE_SRC)
    assert mode(pkg) == 0o700
    assert {mode(p) for p in pkg.rglob("*.py")} == {0o644}
    # nothing puts ~/.claude/langfuse on the venv's sys.path any more (the old .pth), no old bytecode
    assert not list((lf / "venv").glob("lib*/python*/site-packages/claude_code_langfuse.pth"))
    assert not (lf / "__pycache__").exists()
    # the insights report and the skill that lets Claude run it come along
    assert (lf / "insights.py").read_bytes() == (REPO / "hooks" / "insights.py").read_bytes()
    skill = home / ".claude" / "skills" / "langfuse-insights" / "SKILL.md"
    assert skill.read_bytes() == (REPO / "skills" / "langfuse-insights" / "SKILL.md").read_bytes()
    r_ins = subprocess.run(
        [str(lf / "venv" / "bin" / "python"), str(lf / "insights.py"), "sessions", "--json"],
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r_ins.returncode == 0, r_ins.stderr
    assert mode(lf / "config.json") == 0o600
    assert json.loads((lf / "config.json").read_text()) == {
        "CC_LANGFUSE_PUBLIC_KEY": PK,
        "CC_LANGFUSE_SECRET_KEY": SK,
        "CC_LANGFUSE_BASE_URL": "http://localhost:3055",
    }

    settings = home / ".claude" / "settings.json"
    assert json.loads(settings.read_text()) == {"hooks": {e: [{"hooks": [ours(home, e)]}] for e in EVENTS}}
    assert mode(settings) == 0o600
    assert backups(home) == []  # nothing existed to back up
    assert SK not in r.stdout + r.stderr  # the secret is never echoed
    assert "Hook status" in r.stdout and "uninstall-hook.sh" in r.stdout
    assert "older install" not in r.stdout


def test_second_install_writes_nothing(home, env_file):
    ok(run(INSTALL, home, "--env-file", str(env_file)))
    claude = home / ".claude"
    pkg = claude / "langfuse" / "claude_code_langfuse"
    files = [claude / "settings.json", claude / "langfuse" / "config.json", claude / "langfuse" / "langfuse_hook.py"]
    files += sorted(pkg.rglob("*.py")) + sorted(pkg.rglob("*.pyc"))  # sources and their bytecode
    before = {p: (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in files}
    listing = sorted(p.name for p in claude.iterdir())

    # pip must not run when the venv already satisfies the pin: make it fail if it did.
    r = ok(
        run(INSTALL, home, "--env-file", str(env_file), env={"PIP_CONSTRAINT": str(home / "no-such-constraints.txt"), "PIP_NO_INDEX": "1"})
    )
    assert "pip not needed" in r.stdout
    assert {p: (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in files} == before
    assert sorted(p.name for p in claude.iterdir()) == listing
    assert backups(home) == []


OTHER_SETTINGS = {
    "model": "opus",
    "env": {"FOO": "bar", "LANGFUSE_PUBLIC_KEY": "pk-lf-users-own-app"},
    "permissions": {"allow": ["Bash(ls:*)"], "deny": ["Read(./.env)"]},
    "hooks": {
        "Stop": [{"hooks": [{"type": "command", "command": "notify-send done", "timeout": 5}]}],
        "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "~/bin/guard.sh"}]}],
    },
    "statusLine": {"type": "command", "command": "echo ✓ ünï"},
}


def write_settings(home: Path, obj, indent=4, file_mode=0o640) -> bytes:
    p = home / ".claude" / "settings.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    raw = (json.dumps(obj, indent=indent, ensure_ascii=False) + "\n").encode()
    p.write_bytes(raw)
    p.chmod(file_mode)
    return raw


def test_install_keeps_other_hooks_env_permissions(home, env_file):
    original = write_settings(home, OTHER_SETTINGS)
    ok(run(INSTALL, home, "--env-file", str(env_file)))
    settings = home / ".claude" / "settings.json"
    new = json.loads(settings.read_text())

    assert set(new) == set(OTHER_SETTINGS)
    for key in ("model", "env", "permissions", "statusLine"):
        assert new[key] == OTHER_SETTINGS[key]  # no keys pushed into env (readable by the model)
    assert new["hooks"]["PreToolUse"] == OTHER_SETTINGS["hooks"]["PreToolUse"]
    assert new["hooks"]["Stop"] == OTHER_SETTINGS["hooks"]["Stop"] + [{"hooks": [ours(home)]}]
    assert new["hooks"]["SubagentStop"] == [{"hooks": [ours(home)]}]
    assert new["hooks"]["SessionEnd"] == [{"hooks": [ours(home)]}]
    assert mode(settings) == 0o640  # the user's mode is kept

    [b] = backups(home)
    assert b.read_bytes() == original and mode(b) == 0o600


def test_stale_entry_of_ours_is_updated_not_duplicated(home, env_file):
    old = {
        "hooks": {
            "Stop": [
                {
                    "hooks": [
                        {"type": "command", "command": "python3 ~/.claude/langfuse/langfuse_hook.py"},
                        {"type": "command", "command": "echo other"},
                    ]
                }
            ]
        }
    }
    write_settings(home, old)
    ok(run(INSTALL, home, "--env-file", str(env_file)))
    new = json.loads((home / ".claude" / "settings.json").read_text())
    assert new["hooks"]["Stop"] == [{"hooks": [ours(home), {"type": "command", "command": "echo other"}]}]


def test_invalid_settings_is_refused_and_untouched(tmp_path, env_file):
    home = tmp_path / "home"
    settings = home / ".claude" / "settings.json"
    settings.parent.mkdir(parents=True)
    raw = b'{\n  "model": "opus",\n}\n'
    settings.write_bytes(raw)
    r = run(INSTALL, home, "--env-file", str(env_file))
    assert r.returncode != 0
    assert str(settings) in r.stderr and "line 3 column 1" in r.stderr
    assert settings.read_bytes() == raw
    assert backups(home) == []
    assert not (home / ".claude" / "langfuse").exists()  # refused before creating anything


def test_duplicate_key_in_settings_is_refused(tmp_path, env_file):
    home = tmp_path / "home"
    settings = home / ".claude" / "settings.json"
    settings.parent.mkdir(parents=True)
    raw = b'{"env": {"A": "1"}, "env": {"B": "2"}}'
    settings.write_bytes(raw)
    r = run(INSTALL, home, "--env-file", str(env_file))
    assert r.returncode != 0 and "duplicate key 'env'" in r.stderr
    assert settings.read_bytes() == raw


def test_environment_overrides_env_file(home, env_file):
    ok(
        run(
            INSTALL,
            home,
            "--env-file",
            str(env_file),
            env={
                "CC_LANGFUSE_PUBLIC_KEY": "pk-lf-cloud",
                "CC_LANGFUSE_SECRET_KEY": "sk-lf-cloud",
                "CC_LANGFUSE_BASE_URL": "https://cloud.langfuse.com/",
            },
        )
    )
    cfg = json.loads((home / ".claude" / "langfuse" / "config.json").read_text())
    assert cfg == {
        "CC_LANGFUSE_PUBLIC_KEY": "pk-lf-cloud",
        "CC_LANGFUSE_SECRET_KEY": "sk-lf-cloud",
        "CC_LANGFUSE_BASE_URL": "https://cloud.langfuse.com",
    }


def test_reinstall_with_new_keys_updates_config_and_keeps_user_keys(home, env_file, tmp_path):
    ok(run(INSTALL, home, "--env-file", str(env_file)))
    cfg_path = home / ".claude" / "langfuse" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["CC_LANGFUSE_REDACT_PATTERNS"] = ["acme-[0-9]+"]
    cfg_path.write_text(json.dumps(cfg))
    ok(run(INSTALL, home, "--env-file", str(write_env(tmp_path / "new.env", sk="sk-lf-rotated", port="4000"))))
    assert json.loads(cfg_path.read_text()) == {
        "CC_LANGFUSE_PUBLIC_KEY": PK,
        "CC_LANGFUSE_SECRET_KEY": "sk-lf-rotated",
        "CC_LANGFUSE_BASE_URL": "http://localhost:4000",
        "CC_LANGFUSE_REDACT_PATTERNS": ["acme-[0-9]+"],
    }
    assert mode(cfg_path) == 0o600


def test_no_keys_anywhere_is_a_clear_error(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    only_port = tmp_path / "port-only.env"
    only_port.write_text("LANGFUSE_PORT=3050\n")
    r = run(INSTALL, home, "--env-file", str(only_port))
    assert r.returncode != 0
    for needle in (
        "generate-env.sh",
        "--env-file",
        "CC_LANGFUSE_PUBLIC_KEY",
        "CC_LANGFUSE_SECRET_KEY",
        "CC_LANGFUSE_BASE_URL",
        "LANGFUSE_INIT_PROJECT_PUBLIC_KEY",
    ):
        assert needle in r.stderr
    assert not (home / ".claude").exists()

    r = run(INSTALL, home, "--env-file", str(tmp_path / "missing.env"))
    assert r.returncode != 0 and str(tmp_path / "missing.env") in r.stderr


def test_env_file_is_parsed_as_data_never_run(home, tmp_path):
    marker = tmp_path / "pwned"
    secret = f'sk-lf-$(touch {marker})`touch {marker}`"x#y\\z'
    env_file = tmp_path / "tricky.env"
    env_file.write_text(
        "# comment line\n"
        "export LANGFUSE_INIT_PROJECT_PUBLIC_KEY=pk-lf-123   # inline comment\n"
        f"LANGFUSE_INIT_PROJECT_SECRET_KEY='{secret}'\n"
        'LANGFUSE_PORT="3077"\n'
    )
    ok(run(INSTALL, home, "--env-file", str(env_file)))
    cfg = json.loads((home / ".claude" / "langfuse" / "config.json").read_text())
    assert cfg == {"CC_LANGFUSE_PUBLIC_KEY": "pk-lf-123", "CC_LANGFUSE_SECRET_KEY": secret, "CC_LANGFUSE_BASE_URL": "http://localhost:3077"}
    assert not marker.exists()


GENERATE_ENV = REPO / "scripts" / "generate-env.sh"


@pytest.mark.skipif(not GENERATE_ENV.is_file(), reason="scripts/generate-env.sh not written yet")
def test_install_from_the_env_that_generate_env_writes(home, tmp_path):
    out = tmp_path / "generated.env"
    g = subprocess.run(
        [
            "bash",
            str(GENERATE_ENV),
            "--non-interactive",
            "--email",
            "dev@example.com",
            "--password-stdin",
            "--org-name",
            'Acme "R&D" #1 $x \\ y',
            "--port",
            "3077",
            "--output",
            str(out),
        ],
        input='pa$$"word\\1 #x\n',
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert g.returncode == 0, g.stderr
    text = out.read_text()
    pk = re.search(r'^LANGFUSE_INIT_PROJECT_PUBLIC_KEY="(pk-lf-[0-9a-f]+)"$', text, re.M).group(1)
    sk = re.search(r'^LANGFUSE_INIT_PROJECT_SECRET_KEY="(sk-lf-[0-9a-f]+)"$', text, re.M).group(1)
    ok(run(INSTALL, home, "--env-file", str(out)))
    cfg = json.loads((home / ".claude" / "langfuse" / "config.json").read_text())
    assert cfg == {"CC_LANGFUSE_PUBLIC_KEY": pk, "CC_LANGFUSE_SECRET_KEY": sk, "CC_LANGFUSE_BASE_URL": "http://localhost:3077"}


def test_compose_quoting_in_env_file(home, tmp_path):
    env_file = tmp_path / "compose.env"
    # Compose .env syntax: inside double quotes \\ is \, \" is " and $$ is $.
    env_file.write_text(
        'LANGFUSE_INIT_PROJECT_PUBLIC_KEY="pk-lf-1"\n'
        'LANGFUSE_INIT_PROJECT_SECRET_KEY="sk-lf-a\\\\b\\"c$$d"\n'
        'LANGFUSE_BIND_ADDRESS="10.1.2.3"\nLANGFUSE_PORT="3099"\n'
    )
    ok(run(INSTALL, home, "--env-file", str(env_file)))
    cfg = json.loads((home / ".claude" / "langfuse" / "config.json").read_text())
    assert cfg["CC_LANGFUSE_SECRET_KEY"] == 'sk-lf-a\\b"c$d'
    assert cfg["CC_LANGFUSE_BASE_URL"] == "http://10.1.2.3:3099"  # published only on that address


def test_home_with_spaces_and_quotes_gives_a_working_command(tmp_path, pip_installed_home, env_file):
    ok(pip_installed_home[1])
    home = tmp_path / """it's a "home" $HOME `x`"""
    seed_venv(pip_installed_home[0], home)
    ok(run(INSTALL, home, "--env-file", str(env_file)))
    new = json.loads((home / ".claude" / "settings.json").read_text())
    [[handler]] = [g["hooks"] for g in new["hooks"]["Stop"]]
    # Claude Code runs the command through sh: it must reach our files, then `status` runs.
    r = subprocess.run(
        ["sh", "-c", handler["command"] + " status"],
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr


def registered(home: Path, event: str = "Stop") -> str:
    settings = json.loads((home / ".claude" / "settings.json").read_text())
    [command] = [h["command"] for g in settings["hooks"][event] for h in g["hooks"] if "langfuse_hook" in h["command"]]
    return command


def run_registered_hook(home: Path, cwd: Path, question: str, env: dict | None = None, command: str | None = None) -> list[str]:
    """A finished turn, then the registered Stop command (or `command`) run the way Claude Code runs
    it (through sh, in the project folder, the event on stdin); returns the queue once the worker is done."""
    t = Transcript(str(home / ".claude" / "projects" / "-project" / f"{uuid.uuid4()}.jsonl"), cwd=str(cwd))
    t.simple_turn(question, "Done.")
    # nothing listens; the worker exits after its failed send instead of retrying it
    e = {
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "CC_LANGFUSE_BASE_URL": "http://127.0.0.1:9",
        "CC_LANGFUSE_RETRY_FOR": "0",
    }
    r = subprocess.run(
        ["sh", "-c", command or registered(home)],
        input=json.dumps(stop_event(t)).encode(),
        cwd=cwd,
        env={**e, **(env or {})},
        capture_output=True,
        timeout=60,
    )
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")  # what Claude Code needs from a hook
    state = home / ".claude" / "state"
    wait_for_worker(state)  # the hook only leaves the event in the inbox and wakes the worker
    queue = state / "pending_traces.jsonl"
    lines = queue.read_text().splitlines() if queue.exists() else []
    log = state / "langfuse_hook.log"
    assert any(question in line for line in lines), log.read_text() if log.exists() else "no log"
    return lines


def make_old_install(home: Path, original_settings: bytes) -> None:
    """What the installer before the package split left: `-m langfuse_hook` entries found through a
    .pth in the venv, the single-file hook compiled into ~/.claude/langfuse/__pycache__, no package."""
    lf = home / ".claude" / "langfuse"
    vpy = lf / "venv" / "bin" / "python"
    (lf / "langfuse_hook.py").write_text("# the single-file hook of 0.1\n")
    (lf / "insights.py").write_text("import langfuse_hook\n")
    compiled = subprocess.run(
        [str(vpy), "-c", "import py_compile, sys; print(py_compile.compile(sys.argv[1], doraise=True))", str(lf / "langfuse_hook.py")],
        capture_output=True,
        text=True,
    )
    assert compiled.returncode == 0, compiled.stderr
    assert Path(compiled.stdout.strip()).parent == lf / "__pycache__"
    (purelib(vpy) / "claude_code_langfuse.pth").write_text(f"{lf}\n")
    (lf / "config.json").write_text(json.dumps({"CC_LANGFUSE_PUBLIC_KEY": PK, "CC_LANGFUSE_SECRET_KEY": SK}))
    (lf / "install-record.json").write_text(
        json.dumps({"version": 1, "settings_existed": True, "settings_original": original_settings.decode()})
    )
    settings = json.loads(original_settings)
    old = {"type": "command", "command": f'"{vpy}" -m langfuse_hook'}
    for event in EVENTS:
        settings["hooks"].setdefault(event, []).append({"hooks": [old]})
    # and a hand-made entry from the README of even older days: ours too, so a duplicate
    settings["hooks"]["Stop"].append({"hooks": [{"type": "command", "command": "python3 ~/.claude/langfuse/langfuse_hook.py"}]})
    (home / ".claude" / "settings.json").write_text(json.dumps(settings, indent=2))


def test_upgrade_from_the_single_file_install(home, env_file, tmp_path):
    original = write_settings(home, OTHER_SETTINGS)
    make_old_install(home, original)
    lf = home / ".claude" / "langfuse"
    vpy = lf / "venv" / "bin" / "python"

    r = ok(run(INSTALL, home, "--env-file", str(env_file)))
    assert "langfuse_hook.cpython" in r.stdout and "(left by an older install)" in r.stdout
    assert "sessions started before this upgrade keep running the old command" in r.stdout

    new = json.loads((home / ".claude" / "settings.json").read_text())
    for event in EVENTS:
        handlers = [h for g in new["hooks"][event] for h in g["hooks"]]
        assert [h for h in handlers if "langfuse" in h["command"]] == [ours(home, event)], event
    assert new["hooks"]["Stop"] == OTHER_SETTINGS["hooks"]["Stop"] + [{"hooks": [ours(home)]}]
    # the old .pth stays until uninstall: a session started before the upgrade still runs
    # `<venv python> -m langfuse_hook`, which must keep working (checked below)
    assert (purelib(vpy) / "claude_code_langfuse.pth").exists()
    assert not (lf / "__pycache__").exists()
    assert (lf / "langfuse_hook.py").read_bytes() == HOOK_SRC.read_bytes()
    assert (lf / "insights.py").read_bytes() == (REPO / "hooks" / "insights.py").read_bytes()
    assert modules(lf / "claude_code_langfuse") == modules(PACKAGE_SRC)

    # the new command works: the turn reaches the queue
    project = tmp_path / "project"
    project.mkdir()
    run_registered_hook(home, project, "Is the upgraded hook alive?")
    # and so does the old one, which sessions started before the upgrade still run
    run_registered_hook(home, project, "Does a session from before the upgrade still trace?", command=f'"{vpy}" -m langfuse_hook')

    # the record of the first (old) install still gives an exact uninstall
    ok(run(UNINSTALL, home))
    assert (home / ".claude" / "settings.json").read_bytes() == original
    assert not lf.exists()


def test_project_files_cannot_shadow_the_hook(home, env_file, tmp_path):
    ok(run(INSTALL, home, "--env-file", str(env_file)))
    project = tmp_path / "project"
    marker = tmp_path / "shadowed"
    (project / "claude_code_langfuse").mkdir(parents=True)
    (project / "json.py").write_text("raise RuntimeError('the project json.py was imported')\n")
    (project / "langfuse_hook.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (project / "claude_code_langfuse" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")

    # the fixture bites: `-m`, as installs before the package split registered it, runs the project's file
    vpy = home / ".claude" / "langfuse" / "venv" / "bin" / "python"
    subprocess.run([str(vpy), "-m", "langfuse_hook"], cwd=project, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert marker.exists()
    marker.unlink()

    # PYTHONPATH too: -I ignores it (and so does the worker the hook starts, in the same folder)
    run_registered_hook(home, project, "Did a project file shadow the hook?", env={"PYTHONPATH": str(project)})
    assert not marker.exists()


def test_installed_package_is_compiled_for_the_venv_python(home, env_file):
    ok(run(INSTALL, home, "--env-file", str(env_file)))
    lf = home / ".claude" / "langfuse"
    pkg = lf / "claude_code_langfuse"
    tag = cache_tag(lf / "venv" / "bin" / "python")

    def bytecode(py: Path) -> Path:
        return py.parent / "__pycache__" / f"{py.stem}.{tag}.pyc"

    def fresh(py: Path) -> bool:
        # timestamp-checked (flags 0) and matching the source's mtime and size: imported as is
        header = bytecode(py).read_bytes()[:16]
        st = py.stat()
        return (
            header[4:8] == b"\0\0\0\0"
            and int.from_bytes(header[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
            and int.from_bytes(header[12:16], "little") == st.st_size & 0xFFFFFFFF
        )

    sources = sorted(p for p in pkg.rglob("*.py") if "__pycache__" not in p.parts)
    assert sources and all(fresh(py) for py in sources)

    # a module the repo dropped (and its bytecode) goes; a changed module is put back and recompiled
    gone = pkg / "gone_module.py"
    gone.write_text("x = 1\n")
    bytecode(gone).write_bytes(b"stale")
    (pkg / "__pycache__" / f"removed_long_ago.{tag}.pyc").write_bytes(b"stale")
    edited = pkg / "hook.py"
    edited.write_text(edited.read_text() + "# edited by hand\n")
    ok(run(INSTALL, home, "--env-file", str(env_file)))
    assert not gone.exists() and not bytecode(gone).exists()
    assert not (pkg / "__pycache__" / f"removed_long_ago.{tag}.pyc").exists()
    assert modules(pkg) == modules(PACKAGE_SRC)
    assert all(fresh(py) for py in sources)


def test_python_too_old_is_refused(tmp_path, env_file):
    fake = tmp_path / "python3.9"
    fake.write_text("#!/bin/sh\necho 3.9.18\n")
    fake.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    r = run(INSTALL, home, "--env-file", str(env_file), python=str(fake))
    assert r.returncode != 0
    assert "3.11 or newer" in r.stderr and "3.9.18" in r.stderr and "--python" in r.stderr
    assert not (home / ".claude").exists()


def test_missing_venv_module_names_the_debian_package(tmp_path, env_file):
    # Debian's python3 without python3-venv: `import ensurepip` fails.
    shadow = tmp_path / "shadow"
    (shadow / "ensurepip").mkdir(parents=True)
    (shadow / "ensurepip" / "__init__.py").write_text("raise ImportError('ensurepip is disabled')\n")
    wrapper = tmp_path / "python3"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{shadow}" exec "{BASE_PY}" "$@"\n')
    wrapper.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    r = run(INSTALL, home, "--env-file", str(env_file), python=str(wrapper))
    assert r.returncode != 0 and "python3-venv" in r.stderr
    assert not (home / ".claude" / "settings.json").exists()


def test_pip_failure_registers_nothing(tmp_path, env_file):
    home = tmp_path / "home"
    original = write_settings(home, OTHER_SETTINGS)
    r = run(INSTALL, home, "--env-file", str(env_file), env={"PIP_CONSTRAINT": str(tmp_path / "no-such-file.txt"), "PIP_NO_INDEX": "1"})
    assert r.returncode != 0 and "pip could not install" in r.stderr
    assert (home / ".claude" / "settings.json").read_bytes() == original
    assert backups(home) == []
    assert not (home / ".claude" / "langfuse" / "config.json").exists()
    assert not (home / ".claude" / "langfuse" / "langfuse_hook.py").exists()
    assert not (home / ".claude" / "langfuse" / "claude_code_langfuse").exists()


def test_default_python3_from_path(home, env_file):
    # No --python: python3 is found on PATH (the case of a user typing just the script name).
    ok(run(INSTALL, home, "--env-file", str(env_file), python=None))
    assert (home / ".claude" / "settings.json").exists()


# --------------------------------------------------------------------------- uninstall


def test_uninstall_restores_original_bytes(home, env_file):
    original = b'{"model":"sonnet",   "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "echo hi"}]}]}}'
    settings = home / ".claude" / "settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_bytes(original)
    settings.chmod(0o644)
    ok(run(INSTALL, home, "--env-file", str(env_file)))
    assert settings.read_bytes() != original

    r = ok(run(UNINSTALL, home))
    assert settings.read_bytes() == original
    assert mode(settings) == 0o644
    assert not (home / ".claude" / "langfuse").exists()
    assert len(backups(home)) == 2  # one by install, one by uninstall
    assert "Uninstalled" in r.stdout


def test_uninstall_removes_settings_it_created_and_keeps_queue(home, env_file):
    ok(run(INSTALL, home, "--env-file", str(env_file)))
    state = home / ".claude" / "state"
    state.mkdir()
    queue = state / "pending_traces.jsonl"
    queue.write_text('{"v": 1, "key": "turn:abc"}\n')
    ok(run(UNINSTALL, home))
    assert not (home / ".claude" / "settings.json").exists()
    assert backups(home) == []
    assert not (home / ".claude" / "langfuse").exists()
    assert not (home / ".claude" / "skills" / "langfuse-insights").exists()
    assert queue.read_text() == '{"v": 1, "key": "turn:abc"}\n'
    # Idempotent: a second run finds nothing to do and succeeds.
    ok(run(UNINSTALL, home))


def test_uninstall_keeps_what_the_user_added_since(home, env_file):
    write_settings(home, OTHER_SETTINGS)
    ok(run(INSTALL, home, "--env-file", str(env_file)))
    settings = home / ".claude" / "settings.json"
    edited = json.loads(settings.read_text())
    edited["permissions"]["allow"].append("Bash(git status)")
    edited["hooks"]["SessionEnd"].insert(0, {"matcher": "clear", "hooks": [{"type": "command", "command": "echo bye"}]})
    settings.write_text(json.dumps(edited, indent=2))

    ok(run(UNINSTALL, home))
    after = json.loads(settings.read_text())
    expected = json.loads(json.dumps(OTHER_SETTINGS))
    expected["permissions"]["allow"].append("Bash(git status)")
    expected["hooks"]["SessionEnd"] = [{"matcher": "clear", "hooks": [{"type": "command", "command": "echo bye"}]}]
    assert after == expected
    assert mode(settings) == 0o640


def test_uninstall_refuses_invalid_settings_and_keeps_hook_files(home, env_file):
    ok(run(INSTALL, home, "--env-file", str(env_file)))
    settings = home / ".claude" / "settings.json"
    broken = settings.read_bytes()[:-5]
    settings.write_bytes(broken)
    r = run(UNINSTALL, home)
    assert r.returncode != 0 and str(settings) in r.stderr
    assert settings.read_bytes() == broken
    # The entries still point at the hook, so it must stay runnable.
    assert (home / ".claude" / "langfuse" / "langfuse_hook.py").exists()
    assert (home / ".claude" / "langfuse" / "claude_code_langfuse" / "hook.py").exists()
    assert (home / ".claude" / "langfuse" / "venv" / "bin" / "python").exists()


def test_symlinked_settings_from_a_dotfiles_repo_stays_a_symlink(home, env_file, tmp_path):
    target = tmp_path / "dotfiles" / "claude-settings.json"
    target.parent.mkdir()
    original = b'{"model": "opus"}\n'
    target.write_bytes(original)
    link = home / ".claude" / "settings.json"
    link.symlink_to(target)
    ok(run(INSTALL, home, "--env-file", str(env_file)))
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text())["hooks"]["Stop"] == [{"hooks": [ours(home)]}]
    ok(run(UNINSTALL, home))
    assert link.is_symlink() and target.read_bytes() == original


def test_purge_removes_only_our_state_files(home, env_file):
    ok(run(INSTALL, home, "--env-file", str(env_file)))
    state = home / ".claude" / "state"
    (state / "locks").mkdir(parents=True, exist_ok=True)
    ours_files = [
        "langfuse_state.json",
        "pending_traces.jsonl",
        "dead_traces.jsonl",
        "langfuse_hook.log",
        "langfuse_hook.log.1",
        "langfuse_sender.json",
        "locks/queue.lock",
        "inbox/00000000000000000001-1.json",  # a hook event the worker has not read yet
    ]
    (state / "inbox").mkdir()
    for name in ours_files:
        (state / name).write_text("x\n")
    (state / "other_tool_state.json").write_text("{}")
    ok(run(UNINSTALL, home, "--purge"))
    assert sorted(p.name for p in state.iterdir()) == ["other_tool_state.json"]


def test_scripts_pass_shellcheck():
    sc = shutil.which("shellcheck")
    if not sc:
        pytest.skip("shellcheck not installed")
    repo = INSTALL.parent.parent
    scripts = sorted(str(p) for p in (repo / "scripts").glob("*.sh")) + [str(repo / ".ci" / "run")]
    r = subprocess.run([sc, *scripts], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_fresh_install_brings_the_price_source(pip_installed_home):
    """`models sync` and insights' local cost read prices from genai-prices in the hook's venv."""
    home, r = pip_installed_home
    ok(r)
    vpy = home / ".claude" / "langfuse" / "venv" / "bin" / "python"
    code = "from genai_prices import data_snapshot as d; print(d.get_snapshot().find_provider_model('claude-opus-5-5', None, None, None)[1].id)"
    v = subprocess.run([str(vpy), "-I", "-c", code], capture_output=True, text=True)
    assert v.returncode == 0 and v.stdout.strip() == "claude-opus-5-5", v.stderr


def test_merge_registers_the_fact_events_async_and_upgrades_an_entry_of_ours_without_it(tmp_path):
    """Issue 11: PermissionRequest, PostToolUse(Failure), SubagentStart and SessionStart are facts only,
    run in the background (Claude Code does not wait); Stop, SubagentStop, SessionEnd and StopFailure stay
    synchronous (an async Stop hook is killed at -p shutdown). An earlier entry of ours without async gets it."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import settings_merge
    finally:
        sys.path.remove(str(REPO / "scripts"))
    places = settings_merge.Places(str(tmp_path))
    before = {"hooks": {"PostToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": places.command()}]}]}}
    new = settings_merge.merge_ours(before, places, tmp_path / "settings.json")
    for event in EVENTS:
        [mine] = [h for g in new["hooks"][event] for h in g["hooks"] if h["command"] == places.command()]
        assert (mine.get("async") is True) == (event in ASYNC_EVENTS), event
    assert new["hooks"]["PostToolUse"][0]["matcher"] == "Bash"  # the user's group kept, only async added
    assert settings_merge.merge_ours(new, places, tmp_path / "settings.json") == new  # idempotent
    assert settings_merge.remove_ours(new, places, tmp_path / "settings.json") == {}
