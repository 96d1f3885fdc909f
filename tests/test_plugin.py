"""The repository as a Claude Code plugin marketplace: manifests, and a real install + session.

The end-to-end tests install the plugin with the real CLI (2.1.328) into a temp HOME exactly as a
user would (`claude plugin marketplace add <path>` + `claude plugin install`), set the userConfig
options through the CLI, run one `claude -p` turn against the scripted Messages API and wait for
the turn to arrive at the Langfuse stand-in: hooks.json, ${CLAUDE_PLUGIN_ROOT}, the
CLAUDE_PLUGIN_OPTION_* variables, ${CLAUDE_PLUGIN_DATA}/venv and the detached worker all have to
work for that.

Without the CLI, hooks.json's command itself is run the way Claude Code runs it (`sh -c` with
CLAUDE_PLUGIN_ROOT / CLAUDE_PLUGIN_DATA set): from a read-only plugin folder as an unprivileged
user (bytecode goes to ${CLAUDE_PLUGIN_DATA}/pycache), and from a project that holds a json.py
and a langfuse_hook.py (they must not shadow ours).
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest
import yaml
from claude_code_langfuse.config import DEFAULT_BASE_URL, load_settings
from claude_code_langfuse.records import trace_id_for
from claude_code_langfuse.runtime import LANGFUSE_REQUIREMENT
from fake_messages_api import reply
from fixtures_claude_cli import claude_env, read_jsonl, run_claude
from transcript_factory import Transcript, wait_for_worker

REPO = pathlib.Path(__file__).resolve().parent.parent
PLUGIN = "langfuse-tracing"
MARKETPLACE = "claude-code-langfuse"
PLUGIN_ID = f"{PLUGIN}@{MARKETPLACE}"
# where Claude Code 2.1.328 puts ${CLAUDE_PLUGIN_DATA} for this plugin (observed: <name>-<marketplace>)
DATA_DIR = pathlib.Path(".claude") / "plugins" / "data" / f"{PLUGIN}-{MARKETPLACE}"
# by script path with -I, never `-m`: the user's project (the hook's working directory), PYTHONPATH
# and user site-packages stay off sys.path
HOOK_COMMAND = 'python3 -I "${CLAUDE_PLUGIN_ROOT}/hooks/langfuse_hook.py"'


def load(path: str) -> dict:
    return json.loads((REPO / path).read_text())


# ---------------------------------------------------------------------------- manifests


def test_hooks_json_registers_the_hook_for_stop_subagentstop_sessionend():
    hooks = load("hooks/hooks.json")["hooks"]
    facts_only = {"PermissionRequest", "PostToolUse", "PostToolUseFailure", "SubagentStart", "SessionStart"}
    assert set(hooks) == {"Stop", "SubagentStop", "SessionEnd", "StopFailure"} | facts_only
    for event, groups in hooks.items():  # facts only run in the background: nothing waits for them
        assert [h.get("async") is True for g in groups for h in g["hooks"]] == [event in facts_only], event
    for event, groups in hooks.items():
        commands = [h["command"] for g in groups for h in g["hooks"] if h["type"] == "command"]
        assert commands == [HOOK_COMMAND], event
    assert (REPO / "hooks" / "langfuse_hook.py").is_file()


def test_user_config_options_reach_the_hook_settings():
    options = load(".claude-plugin/plugin.json")["userConfig"]
    assert options["secret_key"]["sensitive"] is True
    assert not options["public_key"].get("sensitive") and not options["base_url"].get("sensitive")
    # Claude Code exports option KEY to hooks as CLAUDE_PLUGIN_OPTION_<KEY upper-cased>
    env = {
        f"CLAUDE_PLUGIN_OPTION_{k.upper()}": v
        for k, v in {"public_key": "pk-lf-plugin", "secret_key": "sk-lf-plugin", "base_url": "http://127.0.0.1:3999/"}.items()
    }
    settings = load_settings({**env, "CC_LANGFUSE_CONFIG": "/nonexistent/config.json"})
    assert (settings.public_key, settings.secret_key, settings.base_url) == ("pk-lf-plugin", "sk-lf-plugin", "http://127.0.0.1:3999")
    assert set(options) == {"public_key", "secret_key", "base_url"}
    assert options["base_url"]["default"] == DEFAULT_BASE_URL


def test_marketplace_lists_this_repository_as_the_plugin():
    market = load(".claude-plugin/marketplace.json")
    plugin = load(".claude-plugin/plugin.json")
    assert market["name"] == MARKETPLACE
    entry = next(p for p in market["plugins"] if p["name"] == plugin["name"] == PLUGIN)
    assert entry["source"] == "./"
    assert entry.get("version", plugin["version"]) == plugin["version"]


def test_skill_has_frontmatter_and_points_at_both_installs():
    text = (REPO / "skills" / "langfuse-insights" / "SKILL.md").read_text()
    _, front, body = text.split("---", 2)
    meta = yaml.safe_load(front)
    assert meta["name"] == "langfuse-insights"
    assert "most complex sessions" in meta["description"] and len(meta["description"]) <= 1024
    assert 'python3 -I "${CLAUDE_PLUGIN_ROOT}/hooks/insights.py"' in body
    assert "~/.claude/langfuse/venv/bin/python -I ~/.claude/langfuse/insights.py" in body
    for report in ("sessions", "tools", "search", "prompts", "usage"):
        assert f"INSIGHTS {report}" in body


# ---------------------------------------------------------------------------- real CLI


def plugin_tree(dest: pathlib.Path) -> pathlib.Path:
    """The files the plugin consists of, copied like a checkout (the CLI copies the marketplace dir)."""
    for name in (".claude-plugin", "hooks", "skills", "commands"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def cli(claude: str, home: pathlib.Path, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [claude, *argv], env=claude_env(home, "http://127.0.0.1:9"), input=stdin, capture_output=True, text=True, timeout=120, cwd=str(home)
    )
    assert proc.returncode == 0, f"claude {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}"
    return proc


@pytest.mark.e2e
def test_claude_plugin_validate_accepts_the_manifests(claude_cli, tmp_path):
    tree = plugin_tree(tmp_path / "repo")
    proc = subprocess.run(
        [claude_cli, "plugin", "validate", "--json", str(tree)],
        capture_output=True,
        text=True,
        timeout=120,
        env=claude_env(tmp_path, "http://127.0.0.1:9"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["success"] is True and report["manifest"]["errors"] == []
    assert sorted(h["event"] for h in report["provides"]["hooks"]) == sorted(
        [
            "SessionEnd",
            "Stop",
            "SubagentStop",
            "StopFailure",
            "PermissionRequest",
            "PostToolUse",
            "PostToolUseFailure",
            "SubagentStart",
            "SessionStart",
        ]
    )
    assert report["provides"]["skills"] == [f"{PLUGIN}:langfuse-insights"]
    assert report["provides"]["commands"] == [f"{PLUGIN}:langfuse"]  # /langfuse (issue 11)


@pytest.fixture
def installed_plugin(claude_cli, claude_home, tmp_path, langfuse_standin):
    """marketplace add + install, keys set through the CLI the way a user sets them."""
    tree = plugin_tree(tmp_path / "repo")
    cli(claude_cli, claude_home, "plugin", "marketplace", "add", str(tree))
    cli(
        claude_cli,
        claude_home,
        "plugin",
        "install",
        PLUGIN_ID,
        "--config",
        f"public_key={langfuse_standin.public_key}",
        "--config",
        f"base_url={langfuse_standin.base_url}",
    )
    # the secret goes through stdin, never argv (it would show in `ps`)
    cli(
        claude_cli,
        claude_home,
        "plugin",
        "configure",
        PLUGIN_ID,
        "--values-stdin",
        stdin=json.dumps({"secret_key": langfuse_standin.secret_key}),
    )
    shown = json.loads(cli(claude_cli, claude_home, "plugin", "configure", PLUGIN_ID, "--json").stdout)
    assert langfuse_standin.secret_key not in json.dumps(shown), "configure --json must not print the secret"
    settings = json.loads((claude_home / ".claude" / "settings.json").read_text())
    assert settings["enabledPlugins"][PLUGIN_ID] is True
    assert langfuse_standin.secret_key not in json.dumps(settings), "a sensitive option must not land in settings.json"
    yield claude_home / DATA_DIR
    _stop_leftovers(tmp_path)


def _stop_leftovers(tmp_path: pathlib.Path) -> None:
    """Workers/bootstraps this test started (detached, so not our children any more): stop them by pid."""
    marker = str(tmp_path)
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and "langfuse_hook.py" in cmdline or marker in cmdline and "pip" in cmdline:
            try:
                os.kill(int(entry.name), signal.SIGTERM)
            except OSError:
                pass


def prepare_venv(data_dir: pathlib.Path) -> None:
    """${CLAUDE_PLUGIN_DATA}/venv as the bootstrap leaves it, with the dev venv's packages instead of a pip install."""
    venv = data_dir / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    import langfuse

    (site / "dev-venv.pth").write_text(str(pathlib.Path(langfuse.__file__).resolve().parent.parent) + "\n")
    (venv / ".langfuse-ready").write_text(LANGFUSE_REQUIREMENT + "\n")


def wait_for_trace(standin, session_id: str, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for observations in standin.traces().values():
            if any(o.is_root and o.session_id == session_id for o in observations):
                return observations
        time.sleep(0.5)
    return []


def hook_log(home: pathlib.Path) -> str:
    path = home / ".claude" / "state" / "langfuse_hook.log"
    return path.read_text()[-3000:] if path.exists() else "(no hook log)"


def assert_turn_arrived(run, standin, home: pathlib.Path, timeout: float) -> None:
    observations = wait_for_trace(standin, run.session_id, timeout)
    assert observations, (
        f"no trace for session {run.session_id} reached the stand-in within {timeout:.0f}s; "
        f"stand-in statuses {standin.statuses()}\nhook log:\n{hook_log(home)}"
    )
    root = next(o for o in observations if o.is_root)
    prompt_row = next(r for r in read_jsonl(run.transcript) if r.get("type") == "user" and r.get("promptId"))
    assert root.trace_id == trace_id_for(run.session_id, prompt_row["promptId"])
    assert "hello from the plugin" in str(root.input)
    assert "Hi from the plugin!" in str(root.output)
    generations = [o for o in observations if o.type == "generation"]
    assert generations and generations[0].usage_details.get("output") == 7
    queue = home / ".claude" / "state" / "pending_traces.jsonl"
    deadline = time.monotonic() + 20
    while queue.exists() and queue.stat().st_size and time.monotonic() < deadline:
        time.sleep(0.3)
    assert not queue.exists() or queue.stat().st_size == 0, "the delivered record must leave the queue"


@pytest.mark.e2e
def test_plugin_install_sends_a_turn_to_langfuse(installed_plugin, claude_home, claude_project, langfuse_standin):
    prepare_venv(installed_plugin)
    run = run_claude(claude_home, claude_project, "hello from the plugin", [reply("Hi from the plugin!")])
    assert_turn_arrived(run, langfuse_standin, claude_home, timeout=60)


def _pypi_reachable() -> bool:
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/")
    try:
        with urllib.request.urlopen(index + "/langfuse/", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.mark.e2e
def test_plugin_bootstraps_its_venv_on_first_use(installed_plugin, claude_home, claude_project, langfuse_standin):
    """The slow path a real user takes: no venv yet, the hook starts a detached bootstrap that
    queues the turn (no SDK needed), builds the venv (pip install), then hands over to a worker in it."""
    if not _pypi_reachable():
        pytest.skip("pip cannot reach the package index (PyPI or PIP_INDEX_URL): the plugin's first-use bootstrap needs it")
    assert not (installed_plugin / "venv").exists()
    started = time.monotonic()
    # CC_LANGFUSE_DEBUG reaches the hook through Claude Code's environment: the log then says when the turn was queued
    run = run_claude(claude_home, claude_project, "hello from the plugin", [reply("Hi from the plugin!")], env={"CC_LANGFUSE_DEBUG": "1"})
    assert time.monotonic() - started < 60, "the bootstrap must not hold the session up"
    assert_turn_arrived(run, langfuse_standin, claude_home, timeout=300)
    assert (installed_plugin / "venv" / ".langfuse-ready").exists()
    log = (claude_home / ".claude" / "state" / "langfuse_hook.log").read_text().splitlines()
    queued = [line for line in log if re.search(rf"{run.session_id}: \d+ turn\(s\) read, [1-9]\d* record\(s\) queued", line)]
    assert queued and any("creating the plugin venv" in line for line in log), "\n".join(log[:40])
    # the turn was safe in the queue before the (slow) venv was ready: a bootstrap woken by an
    # earlier event (the async SessionStart) may have started building first, but the Stop's own
    # bootstrap queues its turn meanwhile
    queued_at = datetime.datetime.strptime(queued[0][:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    ready_at = (installed_plugin / "venv" / ".langfuse-ready").stat().st_mtime
    assert queued_at <= ready_at, "the turn must be safe in the queue before the venv is ready:\n" + "\n".join(log[:40])


# ---------------------------------------------------------------------------- hooks.json's command, without the CLI

NOBODY = 65534  # tests run as root, and root ignores mode bits: the read-only test runs as this user


def manifest_command(event: str = "Stop") -> str:
    return next(h["command"] for g in load("hooks/hooks.json")["hooks"][event] for h in g["hooks"])


def write_turn(home: pathlib.Path, session_id: str, prompt: str, transcript: Transcript | None = None) -> tuple[Transcript, dict, str]:
    """One finished turn in a transcript under `home`; returns the transcript, the Stop event and the turn's queue key."""
    t = transcript or Transcript(str(home / ".claude" / "projects" / "-proj" / f"{session_id}.jsonl"), session_id=session_id)
    t.simple_turn(prompt, "Hi from the plugin!")
    event = {
        "hook_event_name": "Stop",
        "session_id": session_id,
        "transcript_path": t.path,
        "cwd": t.cwd,
        "stop_hook_active": False,
        "last_assistant_message": "Hi from the plugin!",
    }
    return t, event, "turn:" + trace_id_for(session_id, t.prompt_id)


def run_hook_command(command: str, event: dict, *, env: dict, cwd: pathlib.Path, **popen) -> subprocess.CompletedProcess:
    """The command as Claude Code runs a plugin hook: through the shell, the event on stdin,
    CLAUDE_PLUGIN_ROOT / CLAUDE_PLUGIN_DATA in the environment."""
    return subprocess.run(
        ["/bin/sh", "-c", command], input=json.dumps(event), env=env, cwd=str(cwd), capture_output=True, text=True, timeout=60, **popen
    )


def queued_keys(state: pathlib.Path) -> list[str]:
    queue = state / "pending_traces.jsonl"
    lines = queue.read_text().splitlines() if queue.exists() else []
    return [json.loads(line)["key"] for line in lines if line.strip()]


def test_hook_command_is_not_shadowed_by_the_project_it_runs_in(tmp_path):
    """Claude Code runs hooks in the user's project: its json.py / langfuse_hook.py must not replace ours."""
    home, project, data = tmp_path / "home", tmp_path / "project", tmp_path / "plugin-data"
    for d in (home / ".claude", project, data):
        d.mkdir(parents=True)
    marker = tmp_path / "project-code-ran"
    (project / "json.py").write_text("raise ImportError('the project json.py shadowed the standard library')\n")
    (project / "langfuse_hook.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    plugin = plugin_tree(tmp_path / "plugin")
    prepare_venv(data)  # the venv a first use leaves: the worker starts at once, no bootstrap
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "CLAUDE_PLUGIN_ROOT": str(plugin),
        "CLAUDE_PLUGIN_DATA": str(data),
        "PYTHONPATH": str(project),  # -I ignores it too
    }
    _, event, key = write_turn(home, "5d1c0f9e-4b7a-4c35-9a43-3c5c7a1f0b01", "hello from the plugin")
    try:
        proc = run_hook_command(manifest_command(), event, env=env, cwd=project)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
        state = home / ".claude" / "state"
        wait_for_worker(state)
        assert queued_keys(state) == [key], hook_log(home)
        assert not marker.exists(), "the project's langfuse_hook.py ran instead of the plugin's"
        # the fixture bites: the old `-m` form, in the same project, runs the project's file
        old = 'PYTHONPATH="${CLAUDE_PLUGIN_ROOT}/hooks" python3 -m langfuse_hook'
        run_hook_command(old, event, env=env, cwd=project)
        assert marker.exists()
    finally:
        _stop_leftovers(tmp_path)


@pytest.fixture
def shared_dir():
    """A folder outside pytest's tmp (that one is root's, mode 0700), removed afterwards."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="cc-langfuse-plugin-"))
    base.chmod(0o755)
    yield base
    _stop_leftovers(base)
    for path in [base, *base.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)  # not root: the read-only copy must become removable again
    shutil.rmtree(base, ignore_errors=True)


def _python_for(run_as: dict, base: pathlib.Path) -> str | None:
    """A python3 >= 3.11 with `venv` that the unprivileged user can run and that can read `base`."""
    probe = "import os, sys, venv; assert sys.version_info >= (3, 11); os.listdir(sys.argv[1])"
    for candidate in dict.fromkeys(
        [os.path.realpath(sys.executable), shutil.which("python3"), "/usr/bin/python3", "/usr/local/bin/python3"]
    ):
        if not candidate or not os.path.isfile(candidate):
            continue
        try:
            proc = subprocess.run([candidate, "-I", "-c", probe, str(base)], capture_output=True, timeout=60, **run_as)
        except (OSError, subprocess.SubprocessError):
            continue
        if proc.returncode == 0:
            return candidate
    return None


def _pyc_times(prefix: pathlib.Path) -> dict[pathlib.Path, int]:
    return {p: p.stat().st_mtime_ns for p in prefix.rglob("*.pyc")}


@pytest.mark.parametrize("dont_write_bytecode", [False, True], ids=["", "PYTHONDONTWRITEBYTECODE"])
def test_plugin_runs_from_a_read_only_folder_and_caches_its_bytecode_in_plugin_data(shared_dir, dont_write_bytecode):
    """Claude Code's plugin cache may not be writable: the package is compiled once, into
    ${CLAUDE_PLUGIN_DATA}/pycache, and later events load it from there. Also for a user who sets
    PYTHONDONTWRITEBYTECODE (hooks.json's `-I` ignores it; were it ever honoured, the worker
    compiles the package there itself: runtime.cache_bytecode, tested below)."""
    if os.geteuid() == 0:
        # root writes through any mode: run the hook (and so its worker) as an unprivileged user
        run_as: dict = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    else:
        run_as = {}  # our own mode bits already apply
    python = _python_for(run_as, shared_dir)
    if python is None:
        pytest.skip(f"no python3 >= 3.11 with venv that uid {NOBODY if run_as else os.getuid()} can run and that can read {shared_dir}")
    bin_dir = shared_dir / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(python)  # what `python3` in hooks.json finds on this user's PATH

    plugin = plugin_tree(shared_dir / "plugin")
    for path in [plugin, *plugin.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    home, data, project = shared_dir / "home", shared_dir / "plugin-data", shared_dir / "project"
    for d in (home / ".claude", data, project):
        d.mkdir(parents=True)
    session = "0b6a3f7e-2c1d-4e8f-9a0b-7d4c2e1f5a92"
    transcript, event, first_key = write_turn(home, session, "first turn")
    if run_as:
        for path in [home, data, project, *home.rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
    # the venv a first use leaves (no SDK needed here: without keys the worker keeps the queue)
    subprocess.run([python, "-m", "venv", "--without-pip", str(data / "venv")], check=True, capture_output=True, timeout=120, **run_as)
    (data / "venv" / ".langfuse-ready").write_text(LANGFUSE_REQUIREMENT + "\n")

    package = plugin / "hooks" / "claude_code_langfuse"
    writable = subprocess.run([python, "-I", "-c", "import os, sys; sys.exit(os.access(sys.argv[1], os.W_OK))", str(package)], **run_as)
    assert writable.returncode == 0, "the plugin copy must be read-only for the user running the hook"

    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "CLAUDE_PLUGIN_ROOT": str(plugin),
        "CLAUDE_PLUGIN_DATA": str(data),
        **({"PYTHONDONTWRITEBYTECODE": "1"} if dont_write_bytecode else {}),
    }
    state = home / ".claude" / "state"
    first = run_hook_command(manifest_command(), event, env=env, cwd=project, **run_as)
    assert (first.returncode, first.stdout, first.stderr) == (0, "", ""), first.stderr
    wait_for_worker(state)
    assert queued_keys(state) == [first_key], hook_log(home)
    assert not list(plugin.rglob("__pycache__"))

    prefix = data / "pycache"
    # sys.pycache_prefix mirrors the source's absolute path below the prefix
    cached = prefix / str(package).lstrip("/")
    for module in ("hook", "config", "files", "inbox", "runtime", "worker", "collect", "store"):
        assert list(cached.glob(f"{module}.cpython-*.pyc")), (
            f"{module}.py was not cached in {cached}: {sorted(map(str, prefix.rglob('*.pyc')))}"
        )
    before = _pyc_times(prefix)

    # the next event: the package is loaded from that bytecode, nothing is compiled or rewritten
    _, event, second_key = write_turn(home, session, "second turn", transcript)
    verbose = manifest_command().replace("python3 -I ", "python3 -I -v ", 1)
    assert verbose != manifest_command()
    second = run_hook_command(verbose, event, env=env, cwd=project, **run_as)
    assert second.returncode == 0 and second.stdout == "", second.stderr[-3000:]
    wait_for_worker(state)
    assert queued_keys(state) == [first_key, second_key], hook_log(home)
    trace = second.stderr.splitlines()
    loaded = {line.split()[-1] for line in trace if line.startswith(f"# {cached}/") and " matches " in line}
    for module in ("hook", "config", "files", "inbox", "runtime"):
        assert str(package / f"{module}.py") in loaded, f"{module}.py not loaded from {cached}:\n" + "\n".join(
            line for line in trace if "claude_code_langfuse" in line
        )
    # only the package's __init__ (a few lines: it sets the cache folder before any module loads)
    compiled = [line for line in trace if line.startswith(f"# code object from {package}/") and not line.endswith("/__init__.py")]
    assert not compiled, compiled
    assert not [
        line
        for line in trace
        if ("could not create" in line and not line.endswith("/__pycache__': PermissionError(13, 'Permission denied')"))
        or line.startswith("# created ")
    ]
    # (Python tries once to cache __init__ beside it, which the read-only folder refuses: harmless)
    assert _pyc_times(prefix) == before, "a later event (hook or worker) recompiled the package"


def test_the_worker_compiles_the_package_into_the_prefix_when_python_may_not_write_bytecode(tmp_path):
    """`-B` (or PYTHONDONTWRITEBYTECODE without -I) stops Python writing bytecode as it imports;
    for a read-only install every hook event would then compile its modules from source."""
    prefix = tmp_path / "pycache"
    code = (
        "import logging, sys; sys.pycache_prefix = sys.argv[1]; sys.path.insert(0, sys.argv[2]);"
        "from claude_code_langfuse.runtime import cache_bytecode; cache_bytecode(logging.getLogger('t'))"
    )
    package = REPO / "hooks" / "claude_code_langfuse"
    for flags in (["-B"], []):  # with -B it compiles; without, Python's own imports do and it does nothing
        shutil.rmtree(prefix, ignore_errors=True)
        subprocess.run([sys.executable, "-I", *flags, "-c", code, str(prefix), str(package.parent)], check=True, timeout=120)
        cached = {p.name.split(".")[0] for p in (prefix / str(package).lstrip("/")).glob("*.pyc")}
        expected = {p.stem for p in package.glob("*.py")} if flags else {"__init__", "runtime", "config", "files"}
        assert cached == expected, (flags, sorted(cached))
