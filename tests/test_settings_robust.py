"""Settings never turn tracing off by accident, and never put files into the user's project
(issue 9, items 6 and 8).

Every setting that makes no sense (nan, inf, negative, huge, empty, not a number, not a word we
know, not a URL, a relative path) falls back to its default or the nearest allowed value and is
reported in `config_error`, which the worker's log, `status` and `doctor` show; loading settings
never raises. And with HOME unset (no passwd entry either) or a relative CC_LANGFUSE_STATE_DIR,
the hook writes nothing relative to its working directory, which is the user's repository.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest
from claude_code_langfuse.config import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_FIELD_CHARS,
    DEFAULT_QUEUE_WARN_BYTES,
    DEFAULT_TIMEOUT_S,
    MAX_FIELD_CHARS,
    MAX_TIMEOUT_S,
    MIN_FIELD_CHARS,
    MIN_TIMEOUT_S,
    hook_settings,
    load_settings,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transcript_factory import Transcript, stop_event, wait_for_worker

HOOK = str(pathlib.Path(__file__).resolve().parent.parent / "hooks" / "langfuse_hook.py")

NUMBER_SETTINGS = ("CC_LANGFUSE_MAX_FIELD_CHARS", "CC_LANGFUSE_TIMEOUT", "CC_LANGFUSE_QUEUE_WARN_MB", "CC_LANGFUSE_RETRY_FOR")
FLAG_SETTINGS = ("TRACE_TO_LANGFUSE", "CC_LANGFUSE_DEBUG", "CC_LANGFUSE_REDACT")
TEXT_SETTINGS = (
    "CC_LANGFUSE_PUBLIC_KEY",
    "CC_LANGFUSE_SECRET_KEY",
    "CC_LANGFUSE_BASE_URL",
    "LANGFUSE_BASE_URL",
    "LANGFUSE_HOST",
    "CC_LANGFUSE_USER_ID",
    "CC_LANGFUSE_REDACT_PATTERNS",
    "CC_LANGFUSE_STATE_DIR",
)
ALL_SETTINGS = NUMBER_SETTINGS + FLAG_SETTINGS + TEXT_SETTINGS

NASTY_NUMBERS = ["nan", "NaN", "inf", "-inf", "Infinity", "1e309", "-1", "0", "-0.0", "", " ", "ten", "1,5", "0x10", "1e-300", "9" * 400]

# env values are text without NUL (the OS cannot hold one)
env_text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40)
number_text = st.one_of(
    st.sampled_from(NASTY_NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    env_text,
)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | env_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(env_text, inner, max_size=3),
    max_leaves=6,
)


def _env_strategy():
    values = {name: number_text for name in NUMBER_SETTINGS}
    values.update(
        {name: st.one_of(st.sampled_from(["true", "false", "maybe", "", "1", "0", "YES", "off"]), env_text) for name in FLAG_SETTINGS}
    )
    values.update({name: env_text for name in TEXT_SETTINGS})
    values["CC_LANGFUSE_BASE_URL"] = st.one_of(
        st.sampled_from(
            ["http://h:1", "https://lf.example.com/", "ftp://x", "localhost:3050", "http://:80", "http://h:99999", "http://h:x"]
        ),
        env_text,
    )
    values["CC_LANGFUSE_STATE_DIR"] = st.one_of(st.sampled_from(["relative/state", ".", "~", "~/s", "/abs/state", ""]), env_text)
    return st.fixed_dictionaries({}, optional=values)


def _check(s, env: dict) -> None:
    """The invariants every loaded Settings must hold."""
    assert isinstance(s.enabled, bool) and isinstance(s.debug, bool) and isinstance(s.redact, bool)
    assert isinstance(s.max_field_chars, int) and MIN_FIELD_CHARS <= s.max_field_chars <= MAX_FIELD_CHARS
    assert isinstance(s.timeout, float) and math.isfinite(s.timeout) and MIN_TIMEOUT_S <= s.timeout <= MAX_TIMEOUT_S
    assert isinstance(s.queue_warn_bytes, int) and s.queue_warn_bytes >= 1
    assert isinstance(s.retry_for, float) and (s.retry_for == 0 or 1 <= s.retry_for <= 86400)
    assert s.base_url.startswith(("http://", "https://")) and not s.base_url.endswith("/")
    assert s.state_dir == "" or os.path.isabs(s.state_dir)
    assert s.config_path == "" or os.path.isabs(s.config_path)
    assert all(isinstance(p, str) for p in s.redact_patterns)
    assert isinstance(s.config_error, str)
    for name in NUMBER_SETTINGS:
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        try:
            value = float(raw.strip())
        except (ValueError, OverflowError):
            value = math.nan
        plausible = {
            "CC_LANGFUSE_MAX_FIELD_CHARS": MIN_FIELD_CHARS <= value <= MAX_FIELD_CHARS,
            "CC_LANGFUSE_TIMEOUT": MIN_TIMEOUT_S <= value <= MAX_TIMEOUT_S,
            "CC_LANGFUSE_QUEUE_WARN_MB": 0 < value <= 1e6,
            "CC_LANGFUSE_RETRY_FOR": raw.strip() == "0" or 1 <= value <= 86400,
        }[name]
        if not plausible and not (name == "CC_LANGFUSE_QUEUE_WARN_MB" and 0 < value):
            assert name in s.config_error, (name, raw, s.config_error)
    for name in FLAG_SETTINGS:
        raw = env.get(name)
        if raw and raw.strip().lower() not in {
            "1",
            "true",
            "yes",
            "on",
            "enable",
            "enabled",
            "0",
            "false",
            "no",
            "off",
            "disable",
            "disabled",
        }:
            assert name in s.config_error, (name, raw, s.config_error)
    state = env.get("CC_LANGFUSE_STATE_DIR")
    if state and not state.startswith("~") and not os.path.isabs(state):
        assert "CC_LANGFUSE_STATE_DIR" in s.config_error


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(env=_env_strategy())
def test_load_settings_never_raises_and_reports_every_nonsense_setting(env, tmp_path_factory):
    base = {"HOME": "/home/prop", "CC_LANGFUSE_CONFIG": "/nonexistent/config.json"}
    s = load_settings({**base, **env})
    _check(s, env)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(conf=st.dictionaries(st.sampled_from(ALL_SETTINGS), json_value, max_size=8), raw=st.booleans())
def test_load_settings_never_raises_on_any_config_file(conf, raw, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(conf) if raw else json.dumps(list(conf.items())))
    s = load_settings({"HOME": "/home/prop", "CC_LANGFUSE_CONFIG": str(path)})
    _check(s, {})
    if not raw:
        assert "must hold a JSON object" in s.config_error


_path_values = st.sampled_from(["", "/abs/state", "relative/state", "~/state", "~", " /lead"])
_debug_values = st.sampled_from(["", "1", "yes", " TRUE ", "off", "maybe"])
_key_values = st.sampled_from(["", "pk-lf-a", "sk-lf-b", "http://127.0.0.1:9"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    env=st.fixed_dictionaries(
        {},
        optional={
            "CC_LANGFUSE_STATE_DIR": _path_values,
            "CC_LANGFUSE_DEBUG": _debug_values,
            "HOME": st.sampled_from(["/home/prop", "", "rel"]),
            "LANGFUSE_PUBLIC_KEY": _key_values,
            "CC_LANGFUSE_SECRET_KEY": _key_values,
            "LANGFUSE_HOST": _key_values,
        },
    ),
    conf=st.fixed_dictionaries(
        {},
        optional={
            "CC_LANGFUSE_STATE_DIR": _path_values | st.just(7),
            "CC_LANGFUSE_DEBUG": _debug_values | st.booleans(),
            "CC_LANGFUSE_SECRET_KEY": _key_values,
        },
    ),
    garbage=st.booleans(),
)
def test_the_hooks_settings_are_those_of_load_settings(env, conf, garbage, tmp_path):
    """The hook reads its three settings without parsing the config file (no `json` import):
    it must land where load_settings says, log as load_settings says, and fingerprint the same
    sources the worker records."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(conf) + ("}{" if garbage else ""))
    full_env = {**env, "CC_LANGFUSE_CONFIG": str(path)}
    hook, full = hook_settings(full_env), load_settings(full_env)
    assert (hook.state_dir, hook.debug, hook.fingerprint) == (full.state_dir, full.debug, full.sources_fingerprint)


def test_the_fingerprint_follows_keys_url_and_config_file_but_not_other_settings(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"CC_LANGFUSE_SECRET_KEY": "sk-1"}')
    base = {"HOME": "/home/prop", "CC_LANGFUSE_CONFIG": str(path), "LANGFUSE_PUBLIC_KEY": "pk-1"}
    first = hook_settings(base).fingerprint
    assert hook_settings({**base, "CC_LANGFUSE_TAGS": "a,b", "TRACE_TO_LANGFUSE": "0"}).fingerprint == first  # per-project settings
    assert hook_settings({**base, "LANGFUSE_PUBLIC_KEY": "pk-2"}).fingerprint != first
    assert hook_settings({**base, "CC_LANGFUSE_BASE_URL": "http://127.0.0.1:8"}).fingerprint != first
    path.write_text('{"CC_LANGFUSE_SECRET_KEY": "sk-2"}')
    assert hook_settings(base).fingerprint != first
    assert "sk-" not in first and len(first) == 16


@pytest.mark.parametrize(
    "name,value,default",
    [
        ("CC_LANGFUSE_QUEUE_WARN_MB", "nan", DEFAULT_QUEUE_WARN_BYTES),
        ("CC_LANGFUSE_QUEUE_WARN_MB", "inf", DEFAULT_QUEUE_WARN_BYTES),
        ("CC_LANGFUSE_QUEUE_WARN_MB", "-5", DEFAULT_QUEUE_WARN_BYTES),
        ("CC_LANGFUSE_TIMEOUT", "inf", DEFAULT_TIMEOUT_S),
        ("CC_LANGFUSE_TIMEOUT", "nan", DEFAULT_TIMEOUT_S),
        ("CC_LANGFUSE_TIMEOUT", "-1", DEFAULT_TIMEOUT_S),
        ("CC_LANGFUSE_MAX_FIELD_CHARS", "inf", DEFAULT_MAX_FIELD_CHARS),
        ("CC_LANGFUSE_MAX_FIELD_CHARS", "1e400", DEFAULT_MAX_FIELD_CHARS),
        ("CC_LANGFUSE_MAX_FIELD_CHARS", "lots", DEFAULT_MAX_FIELD_CHARS),
    ],
)
def test_nonsense_numbers_fall_back_to_the_default_and_say_so(name, value, default):
    s = load_settings({"HOME": "/home/x", "CC_LANGFUSE_CONFIG": "/nonexistent.json", name: value})
    got = {
        "CC_LANGFUSE_QUEUE_WARN_MB": s.queue_warn_bytes,
        "CC_LANGFUSE_TIMEOUT": s.timeout,
        "CC_LANGFUSE_MAX_FIELD_CHARS": s.max_field_chars,
    }
    assert got[name] == default
    assert name in s.config_error and repr(value) in s.config_error


def test_huge_and_tiny_numbers_are_clamped_and_said():
    s = load_settings({"HOME": "/h", "CC_LANGFUSE_CONFIG": "/n.json", "CC_LANGFUSE_TIMEOUT": "1e12", "CC_LANGFUSE_MAX_FIELD_CHARS": "5"})
    assert s.timeout == MAX_TIMEOUT_S and s.max_field_chars == MIN_FIELD_CHARS
    assert "CC_LANGFUSE_TIMEOUT" in s.config_error and "CC_LANGFUSE_MAX_FIELD_CHARS" in s.config_error


def test_good_settings_report_nothing():
    s = load_settings(
        {
            "HOME": "/h",
            "CC_LANGFUSE_CONFIG": "/n.json",
            "CC_LANGFUSE_TIMEOUT": "2.5",
            "CC_LANGFUSE_QUEUE_WARN_MB": "0.5",
            "CC_LANGFUSE_MAX_FIELD_CHARS": "2000",
            "TRACE_TO_LANGFUSE": "off",
            "CC_LANGFUSE_BASE_URL": "https://lf.example.com:8443/",
            "CC_LANGFUSE_STATE_DIR": "~/st",
        }
    )
    assert s.config_error == ""
    assert (s.timeout, s.queue_warn_bytes, s.max_field_chars, s.enabled) == (2.5, 524288, 2000, False)
    assert s.base_url == "https://lf.example.com:8443" and s.state_dir == "/h/st"


@pytest.mark.parametrize("url", ["localhost:3050", "ftp://lf", "http://", "http://lf:99999", "http://lf:port", "lf.example.com"])
def test_a_base_url_that_is_not_one_falls_back_and_says_so(url):
    s = load_settings({"HOME": "/h", "CC_LANGFUSE_CONFIG": "/n.json", "CC_LANGFUSE_BASE_URL": url})
    assert s.base_url == DEFAULT_BASE_URL and repr(url) in s.config_error


# ------------------------------------------------------------------------------ through the hook, status and doctor


def _env(tmp_path, **extra) -> dict:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(tmp_path / "home"),
        "CC_LANGFUSE_STATE_DIR": str(tmp_path / "state"),
        "CC_LANGFUSE_CONFIG": str(tmp_path / "config.json"),
        "CC_LANGFUSE_BASE_URL": "http://127.0.0.1:9",
        "CC_LANGFUSE_PUBLIC_KEY": "pk-lf-x",
        "CC_LANGFUSE_SECRET_KEY": "sk-lf-x",
        "CC_LANGFUSE_USER_ID": "tester",
        "CC_LANGFUSE_RETRY_FOR": "0",  # the worker exits after failing to reach the closed port
    }
    env.update(extra)
    return env


@pytest.mark.parametrize(
    "bad", [{"CC_LANGFUSE_QUEUE_WARN_MB": "nan"}, {"CC_LANGFUSE_QUEUE_WARN_MB": "inf"}, {"CC_LANGFUSE_TIMEOUT": "inf"}], ids=str
)
def test_nonsense_settings_never_turn_tracing_off_and_status_and_doctor_report_them(tmp_path, bad):
    t = Transcript(str(tmp_path / "home" / ".claude" / "projects" / "-p" / "1b469540-beb0-4db7-b5e1-5bf71f36cd69.jsonl"))
    t.simple_turn("still traced", "yes")
    env = _env(tmp_path, **bad)
    hook = subprocess.run([sys.executable, "-I", HOOK], input=json.dumps(stop_event(t)).encode(), env=env, capture_output=True, timeout=60)
    assert (hook.returncode, hook.stdout, hook.stderr) == (0, b"", b"")
    wait_for_worker(tmp_path / "state")
    queue = tmp_path / "state" / "pending_traces.jsonl"
    assert queue.exists() and [json.loads(line)["trace"]["name"] for line in queue.read_text().splitlines()] == ["still traced"]
    (name,) = bad
    log = (tmp_path / "state" / "langfuse_hook.log").read_text()
    assert name in log
    for args in (["status"], ["status", "--json"], ["doctor"]):
        proc = subprocess.run([sys.executable, "-I", HOOK, *args], env=env, capture_output=True, text=True, timeout=60)
        assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
        assert name in proc.stdout, (args, proc.stdout)
    st_json = json.loads(subprocess.run([sys.executable, "-I", HOOK, "status", "--json"], env=env, capture_output=True, text=True).stdout)
    assert st_json["queue_turns"] == 1


@pytest.fixture
def open_tmp():
    """A folder outside pytest's tmp (root's, mode 0700), so another uid can work in it."""
    import shutil
    import tempfile

    base = pathlib.Path(tempfile.mkdtemp(prefix="cc-langfuse-cwd-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _files_under(path: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize(
    "case",
    [
        "no-home",
        "relative-state-dir",
        "relative-state-dir-no-home",
        "relative-config",
        "dot-state-dir",
        "tilde-state-no-home",
        "empty-home",
        "relative-plugin-data",
    ],
)
def test_the_hook_never_writes_into_its_working_directory(open_tmp, case):
    """The hook runs in the user's project. With HOME unset (and, as uid 65534 in a container,
    often no passwd entry) or a relative state folder, nothing may be created there: not the
    queue (which holds transcript text), not the inbox, not the log, not bytecode."""
    tmp_path = open_tmp
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("a user's repository\n")
    t = Transcript(str(tmp_path / "transcripts" / "2b469540-beb0-4db7-b5e1-5bf71f36cd69.jsonl"))
    t.simple_turn("secret project work", "done")
    env = _env(tmp_path)
    del env["HOME"]
    run_as: dict = {}
    home = tmp_path / "home"
    if case == "no-home":
        del env["CC_LANGFUSE_STATE_DIR"], env["CC_LANGFUSE_CONFIG"]
    elif case == "relative-state-dir":
        env.update(HOME=str(home), CC_LANGFUSE_STATE_DIR="state")
    elif case == "relative-state-dir-no-home":
        env["CC_LANGFUSE_STATE_DIR"] = "claude-state"
        del env["CC_LANGFUSE_CONFIG"]
    elif case == "relative-config":
        env.update(HOME=str(home), CC_LANGFUSE_CONFIG="langfuse-config.json")
        del env["CC_LANGFUSE_STATE_DIR"]
        (project / "langfuse-config.json").write_text(json.dumps({"CC_LANGFUSE_STATE_DIR": "from-config-state"}))
    elif case == "dot-state-dir":
        env.update(HOME=str(home), CC_LANGFUSE_STATE_DIR=".")
    elif case == "tilde-state-no-home":
        env["CC_LANGFUSE_STATE_DIR"] = "~/state"
    elif case == "relative-plugin-data":
        env.update(HOME=str(home), CLAUDE_PLUGIN_DATA="plugin-data")  # the plugin's venv would be built in the project
    elif case == "empty-home":
        env["HOME"] = ""
        del env["CC_LANGFUSE_STATE_DIR"], env["CC_LANGFUSE_CONFIG"]
    if "HOME" not in env or not env["HOME"]:
        # no passwd entry either: a uid the system does not know (tests run as root, whose entry exists)
        if os.geteuid() != 0:
            pytest.skip("needs root to run the hook as a uid without a passwd entry")
        uid = 54321
        import pwd

        with pytest.raises(KeyError):
            pwd.getpwuid(uid)
        for path in (project, *project.rglob("*")):
            os.chown(path, uid, uid)
        run_as = {"user": uid, "group": uid, "extra_groups": []}
        python = _python_for_unknown_uid(run_as)
    else:
        python = sys.executable
    before = _files_under(project)
    proc = subprocess.run(
        [python, "-I", HOOK], input=json.dumps(stop_event(t)).encode(), env=env, cwd=str(project), capture_output=True, timeout=60, **run_as
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b""), proc.stderr
    if case in ("relative-state-dir", "relative-config", "dot-state-dir"):
        # HOME is there: the default state folder takes the turn, and its log says why
        state = home / ".claude" / "state"
        wait_for_worker(state)
        assert [json.loads(line)["trace"]["name"] for line in (state / "pending_traces.jsonl").read_text().splitlines()] == [
            "secret project work"
        ]
        log = (state / "langfuse_hook.log").read_text()
        assert "not an absolute path" in log, log
        status = subprocess.run([python, "-I", HOOK, "status"], env=env, cwd=str(project), capture_output=True, text=True, timeout=60)
        assert "not an absolute path" in status.stdout, status.stdout
    elif case == "relative-plugin-data":
        wait_for_worker(tmp_path / "state")
        assert "secret project work" in (tmp_path / "state" / "pending_traces.jsonl").read_text()
    else:
        import time

        time.sleep(1.0)  # a worker, had one been started, would have written by now
        for args in (["status"], ["drain"]):
            proc = subprocess.run(
                [python, "-I", HOOK, *args], env=env, cwd=str(project), capture_output=True, text=True, timeout=60, **run_as
            )
            assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
            assert "not an absolute path" in proc.stdout + proc.stderr or "no state folder" in proc.stdout + proc.stderr
    assert _files_under(project) == before, "the hook wrote into the project"


def _python_for_unknown_uid(run_as: dict) -> str:
    import shutil

    for candidate in dict.fromkeys([os.path.realpath(sys.executable), shutil.which("python3"), "/usr/bin/python3"]):
        if not candidate:
            continue
        try:
            ok = subprocess.run(
                [candidate, "-I", "-c", "import sys; assert sys.version_info >= (3, 11)"], capture_output=True, timeout=30, **run_as
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if ok.returncode == 0:
            return candidate
    pytest.skip("no python3 >= 3.11 that an unknown uid can run")
