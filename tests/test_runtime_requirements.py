"""The runtime requirements (langfuse, genai-prices) reach every install path: pyproject.toml,
the installer's `settings_merge.py pin` / `satisfies`, and the plugin's first-use bootstrap."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from claude_code_langfuse import runtime, worker
from claude_code_langfuse.config import Settings

REPO = Path(__file__).resolve().parents[1]
HELPER = REPO / "scripts" / "settings_merge.py"


def test_runtime_requirements_are_pyprojects_dependencies():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert list(runtime.RUNTIME_REQUIREMENTS) == deps
    assert any(d.startswith("genai-prices") for d in deps)


def test_pin_prints_every_runtime_requirement():
    r = subprocess.run([sys.executable, str(HELPER), "pin", "--pyproject", str(REPO / "pyproject.toml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == list(runtime.RUNTIME_REQUIREMENTS)


def _venv_without(tmp_path: Path, hidden_prefix: str) -> str:
    """A venv that sees the dev venv's packages except those starting with `hidden_prefix`
    (an install made before genai-prices was a requirement)."""
    import langfuse

    site = Path(langfuse.__file__).resolve().parent.parent
    shadow = tmp_path / "site"
    shadow.mkdir()
    for entry in site.iterdir():
        if not entry.name.lower().replace("-", "_").startswith(hidden_prefix):
            (shadow / entry.name).symlink_to(entry)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    venv_site = next((venv / "lib").glob("python3*/site-packages"))
    (venv_site / "shadow.pth").write_text(str(shadow) + "\n")
    return str(venv / "bin" / "python")


def test_satisfies_wants_every_requirement(tmp_path):
    """An existing venv with langfuse only does not satisfy the pins: the installer runs pip and
    the upgrade brings genai-prices (before, the check looked at langfuse alone and skipped pip)."""
    old_venv = _venv_without(tmp_path, "genai_prices")
    both = [runtime.LANGFUSE_REQUIREMENT, runtime.PRICES_REQUIREMENT]
    r = subprocess.run([old_venv, "-I", str(HELPER), "satisfies", *both], capture_output=True, text=True)
    assert r.returncode == 1 and "genai-prices is not installed" in r.stdout
    r = subprocess.run([old_venv, "-I", str(HELPER), "satisfies", runtime.LANGFUSE_REQUIREMENT], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-I", str(HELPER), "satisfies", *both], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("langfuse ") and ", genai-prices " in r.stdout


def test_install_script_passes_every_pin_to_pip_and_to_the_check():
    text = (REPO / "scripts" / "install-hook.sh").read_text()
    assert 'pip install --disable-pip-version-check --no-input --quiet "${PINS[@]}"' in text
    assert text.count('satisfies "${PINS[@]}"') == 2
    assert "mapfile -t" not in text  # macOS ships bash 3.2


def test_plugin_bootstrap_installs_every_runtime_requirement(tmp_path, monkeypatch):
    data = tmp_path / "plugin-data"
    monkeypatch.setenv("CLAUDE_PLUGIN_DATA", str(data))
    calls: list[list[str]] = []

    def fake_run(argv, **kw):
        calls.append(list(argv))
        if "venv" in argv:
            (data / "venv" / "bin").mkdir(parents=True, exist_ok=True)
            py = data / "venv" / "bin" / "python"
            py.write_text("")
            py.chmod(0o755)
        return subprocess.CompletedProcess(argv, 0, b"", b"")

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(worker, "spawn_detached", lambda argv, log: True)
    settings = Settings(user_id="tester", state_dir=str(tmp_path / "state"), base_url="http://127.0.0.1:9")
    assert worker.bootstrap_main(settings) == 0
    pip = next(c for c in calls if "pip" in c)
    assert [a for a in pip if not a.startswith("-") and a not in ("pip", "install")][1:] == list(runtime.RUNTIME_REQUIREMENTS)
    assert (data / "venv" / ".langfuse-ready").read_text().splitlines() == list(runtime.RUNTIME_REQUIREMENTS)
    assert os.path.isdir(tmp_path / "state")
