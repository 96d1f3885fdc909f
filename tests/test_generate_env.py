"""scripts/generate-env.sh: secrets, file safety, hostile input, prompts.

Round trips are read back by Docker Compose's own .env parser (`docker compose config`)
when a Compose v2 client exists (see test_compose.compose_command); otherwise those tests
skip and the literal-encoding test still pins the documented form: double quotes, with
\\ for a backslash, \" for a double quote and $$ for a dollar sign.
"""

from __future__ import annotations

import json
import os
import pathlib
import pty
import re
import select
import shutil
import stat
import subprocess
import termios
import time

import pytest
from test_compose import COMPOSE_FILE, GENERATE_ENV, SECRET_VARS, clean_env, compose_command, compose_config, parse_env_file

HOSTILE = "a|b&c'd\"e$f\\g #h"
PASSWORD = "correct horse battery"

RANDOM_SECRETS = [
    "SALT",
    "ENCRYPTION_KEY",
    "NEXTAUTH_SECRET",
    "POSTGRES_PASSWORD",
    "CLICKHOUSE_PASSWORD",
    "REDIS_PASSWORD",
    "MINIO_ROOT_PASSWORD",
    "LANGFUSE_INIT_PROJECT_PUBLIC_KEY",
    "LANGFUSE_INIT_PROJECT_SECRET_KEY",
]


def gen(tmp_path, *args, stdin=None, output=None, umask=None):
    out = output if output is not None else tmp_path / ".env"
    argv = ["bash", str(GENERATE_ENV), "--output", str(out), *args]
    if umask is not None:
        argv = ["bash", "-c", f'umask {umask}; exec "$@"', "_", *argv]
    r = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(tmp_path),
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    return r, out


def gen_ok(tmp_path, *args, **kw):
    r, out = gen(tmp_path, "--non-interactive", "--email", "owner@example.com", "--password-stdin", *args, stdin=PASSWORD + "\n", **kw)
    assert r.returncode == 0, r.stderr
    return r, out


def mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def unquote(raw: str) -> str:
    assert raw.startswith('"') and raw.endswith('"'), raw
    return raw[1:-1]


@pytest.fixture(scope="module")
def compose():
    cmd = compose_command()
    if cmd is None:
        pytest.skip("no Docker Compose v2 client to read the .env back with its real parser")
    return cmd


# --------------------------------------------------------------------------- hostile input


def test_hostile_input_round_trips_through_composes_env_parser(tmp_path, compose):
    r, out = gen(
        tmp_path,
        "--non-interactive",
        "--email",
        "x+y@example.com",
        "--name",
        HOSTILE,
        "--org-name",
        HOSTILE,
        "--project-name",
        "p " + HOSTILE,
        "--password-stdin",
        stdin=HOSTILE + "\n",
    )
    assert r.returncode == 0, r.stderr
    c = compose_config(compose, out, tmp_path)
    assert c.returncode == 0, c.stderr
    env = json.loads(c.stdout)["services"]["langfuse-web"]["environment"]
    # `config` prints a literal $ as $$ (its own escape); the container gets one $
    got = {k: v.replace("$$", "$") for k, v in env.items()}
    assert got["LANGFUSE_INIT_USER_PASSWORD"] == HOSTILE
    assert got["LANGFUSE_INIT_USER_NAME"] == HOSTILE
    assert got["LANGFUSE_INIT_ORG_NAME"] == HOSTILE
    assert got["LANGFUSE_INIT_PROJECT_NAME"] == "p " + HOSTILE
    assert got["LANGFUSE_INIT_USER_EMAIL"] == "x+y@example.com"


@pytest.mark.parametrize(
    "value",
    [
        "\\",
        "ends with backslash\\",
        "\\'",
        '\\"',
        "$",
        "$$",
        "${HOME}",
        "$HOME",
        "`id`",
        "'single'",
        '"double"',
        "#start",
        " lead and trail ",
        "=equals=",
        "tab-less ünïcödé €",
    ],
)
def test_edge_values_round_trip(tmp_path, compose, value):
    password = value if len(value) >= 8 else value + "-padding"
    r, out = gen(tmp_path, "--non-interactive", "--email", "a@b.example", "--name", value, "--password", password)
    assert r.returncode == 0, r.stderr
    c = compose_config(compose, out, tmp_path)
    assert c.returncode == 0, c.stderr
    env = json.loads(c.stdout)["services"]["langfuse-web"]["environment"]
    assert env["LANGFUSE_INIT_USER_NAME"].replace("$$", "$") == value
    assert env["LANGFUSE_INIT_USER_PASSWORD"].replace("$$", "$") == password


def test_values_are_written_in_the_documented_compose_form(tmp_path):
    r, out = gen(tmp_path, "--non-interactive", "--email", "a@b.example", "--name", HOSTILE, "--password-stdin", stdin=HOSTILE + "\n")
    assert r.returncode == 0, r.stderr
    raw = parse_env_file(out)
    expected = '"a|b&c\'d\\"e$$f\\\\g #h"'
    assert raw["LANGFUSE_INIT_USER_NAME"] == expected
    assert raw["LANGFUSE_INIT_USER_PASSWORD"] == expected


@pytest.mark.parametrize("flag", ["--name", "--password", "--org-name", "--project-name", "--email"])
def test_line_breaks_are_refused_and_nothing_is_written(tmp_path, flag):
    args = {"--email": "a@b.example", "--password": PASSWORD}
    args[flag] = "first line\nINJECTED=1" if flag != "--email" else "a@b.example\nX=1"
    argv = ["--non-interactive"] + [x for kv in args.items() for x in kv]
    r, out = gen(tmp_path, *argv)
    assert r.returncode == 1
    assert "line break" in r.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [], "no temp file left behind"


# --------------------------------------------------------------------------- secrets


def test_secrets_have_the_right_form(tmp_path):
    _, out = gen_ok(tmp_path)
    v = {k: unquote(raw) for k, raw in parse_env_file(out).items()}
    assert re.fullmatch(r"[0-9a-f]{64}", v["ENCRYPTION_KEY"])
    assert re.fullmatch(r"[0-9a-f]{64}", v["SALT"])
    assert re.fullmatch(r"[0-9a-f]{64}", v["NEXTAUTH_SECRET"])
    for name in ("POSTGRES_PASSWORD", "CLICKHOUSE_PASSWORD", "REDIS_PASSWORD", "MINIO_ROOT_PASSWORD"):
        # used inside DATABASE_URL and a redis config line: URL-safe, and long
        assert re.fullmatch(r"[0-9a-f]{32,}", v[name]), name
    assert re.fullmatch(r"pk-lf-[0-9a-f]{32}", v["LANGFUSE_INIT_PROJECT_PUBLIC_KEY"])
    assert re.fullmatch(r"sk-lf-[0-9a-f]{48}", v["LANGFUSE_INIT_PROJECT_SECRET_KEY"])
    assert v["LANGFUSE_INIT_USER_PASSWORD"] == PASSWORD
    assert v["LANGFUSE_INIT_USER_EMAIL"] == "owner@example.com"
    assert v["LANGFUSE_INIT_USER_NAME"] == "owner", "name defaults to the email's local part"
    assert v["LANGFUSE_INIT_ORG_NAME"] == "Claude Code"
    assert v["LANGFUSE_INIT_PROJECT_NAME"] == "claude-code"
    assert v["LANGFUSE_BIND_ADDRESS"] == "127.0.0.1"


def test_two_runs_give_different_secrets(tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    _, out_a = gen_ok(a)
    _, out_b = gen_ok(b)
    va, vb = parse_env_file(out_a), parse_env_file(out_b)
    for name in RANDOM_SECRETS:
        assert va[name] != vb[name], name
    assert len({va[n] for n in RANDOM_SECRETS}) == len(RANDOM_SECRETS), "secrets reused"


def test_no_secret_or_password_is_printed(tmp_path):
    r, out = gen_ok(tmp_path)
    printed = r.stdout + r.stderr
    values = {k: unquote(raw) for k, raw in parse_env_file(out).items()}
    for name in RANDOM_SECRETS + ["LANGFUSE_INIT_USER_PASSWORD"]:
        assert values[name] not in printed, f"{name} was printed"
    assert "Wrote" in r.stdout and "docker compose up -d" in r.stdout, "says what and what next"
    assert "owner@example.com" in r.stdout


# --------------------------------------------------------------------------- the file


def test_file_is_0600_even_under_a_permissive_umask(tmp_path):
    _, out = gen_ok(tmp_path, umask="000")
    assert mode(out) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [".env"], "no temp file left behind"


def test_existing_file_is_refused_without_force_and_left_unchanged(tmp_path):
    _, out = gen_ok(tmp_path)
    before = out.read_bytes()
    stamp = out.stat().st_mtime_ns
    r, _ = gen(tmp_path, "--non-interactive", "--email", "other@example.com", "--password", "another password")
    assert r.returncode == 1
    assert "--force" in r.stderr and "unchanged" in r.stderr
    assert out.read_bytes() == before
    assert out.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [".env"]


def test_force_replaces_and_keeps_a_private_backup(tmp_path):
    _, out = gen_ok(tmp_path)
    old = out.read_bytes()
    out.chmod(0o644)  # even an old file someone opened up gets a private backup
    r, _ = gen(tmp_path, "--non-interactive", "--force", "--email", "new@example.com", "--password", "another password")
    assert r.returncode == 0, r.stderr
    backups = sorted(tmp_path.glob(".env.bak.*"))
    assert len(backups) == 1
    assert re.fullmatch(r"\.env\.bak\.\d{8}-\d{6}(\.\d+)?", backups[0].name)
    assert backups[0].read_bytes() == old
    assert mode(backups[0]) == 0o600
    assert mode(out) == 0o600
    new = parse_env_file(out)
    assert unquote(new["LANGFUSE_INIT_USER_EMAIL"]) == "new@example.com"
    assert new["ENCRYPTION_KEY"] != parse_env_file(backups[0])["ENCRYPTION_KEY"]
    assert backups[0].name in r.stdout
    # a second --force in the same second must not overwrite the first backup
    r2, _ = gen(tmp_path, "--non-interactive", "--force", "--email", "third@example.com", "--password", "another password")
    assert r2.returncode == 0, r2.stderr
    assert len(list(tmp_path.glob(".env.bak.*"))) == 2
    assert backups[0].read_bytes() == old


def test_default_output_is_next_to_docker_compose_yml(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(GENERATE_ENV, tmp_path / "scripts" / "generate-env.sh")
    shutil.copy(COMPOSE_FILE, tmp_path / "docker-compose.yml")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    r = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "generate-env.sh"), "--non-interactive", "--email", "a@b.example", "--password", PASSWORD],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=clean_env(tmp_path),
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / ".env").is_file()
    assert mode(tmp_path / ".env") == 0o600
    assert list(elsewhere.iterdir()) == []


# --------------------------------------------------------------------------- no terminal


@pytest.mark.parametrize(
    "args,missing",
    [
        ([], "--email"),
        (["--email", "a@b.example"], "--password"),
        (["--password", PASSWORD], "--email"),
    ],
)
def test_without_a_terminal_missing_values_are_a_clear_error(tmp_path, args, missing):
    for extra in ([], ["--non-interactive"]):
        r, out = gen(tmp_path, *extra, *args)
        assert r.returncode == 1
        assert missing in r.stderr and "error" in r.stderr
        assert not out.exists()


def test_short_password_and_bad_email_are_refused(tmp_path):
    r, out = gen(tmp_path, "--non-interactive", "--email", "a@b.example", "--password", "short")
    assert r.returncode == 1 and "8 characters" in r.stderr and not out.exists()
    r, out = gen(tmp_path, "--non-interactive", "--email", "nobody", "--password", PASSWORD)
    assert r.returncode == 1 and "email" in r.stderr and not out.exists()


def test_unknown_option_is_an_error(tmp_path):
    r, out = gen(tmp_path, "--pasword", "x")
    assert r.returncode == 1 and "unknown option: --pasword" in r.stderr
    assert not out.exists()


# --------------------------------------------------------------------------- on a terminal


class Terminal:
    """The script on a pseudo-terminal, as a person at a shell would run it."""

    def __init__(self, argv, env):
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True, start_new_session=True)
        os.close(slave)
        self.screen = b""
        self.seen = 0  # what expect() has matched so far: each prompt is waited for anew

    def expect(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.screen[self.seen :]:
            left = deadline - time.monotonic()
            assert left > 0, f"never saw {text!r}; screen: {self.screen!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    assert text.encode() in self.screen[self.seen :], f"exited before {text!r}: {self.screen!r}"
                self.screen += chunk
        self.seen = self.screen.index(text.encode(), self.seen) + len(text)

    def type(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def type_secret(self, line: str, timeout: float = 20.0) -> None:
        """Types only once the program has switched terminal echo off, as a person would
        after seeing the prompt; fails if echo never goes off."""
        deadline = time.monotonic() + timeout
        while termios.tcgetattr(self.master)[3] & termios.ECHO:
            assert time.monotonic() < deadline, "terminal echo never switched off"
            time.sleep(0.02)
        self.type(line)

    def finish(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.screen += os.read(self.master, 4096)
                except OSError:
                    break
        rc = self.proc.wait(timeout=max(1, deadline - time.monotonic()))
        os.close(self.master)
        return rc


def test_prompts_on_a_terminal_hide_the_password_and_ask_twice(tmp_path):
    out = tmp_path / ".env"
    term = Terminal(["bash", str(GENERATE_ENV), "--output", str(out)], clean_env(tmp_path))
    term.expect("Email")
    term.type("me@example.com")
    term.expect("Display name [me]")
    term.type("")  # accept the default
    term.expect("Password")
    term.type_secret("first secret value")
    term.expect("Repeat")
    term.type_secret("a different value")
    term.expect("differ")
    term.expect("Password")
    term.type_secret(HOSTILE)
    term.expect("Repeat")
    term.type_secret(HOSTILE)
    assert term.finish() == 0, term.screen.decode(errors="replace")
    screen = term.screen.decode(errors="replace")
    assert "me@example.com" in screen, "ordinary answers echo as usual"
    for secret in ("first secret value", "a different value", HOSTILE):
        assert secret not in screen, f"password echoed: {secret!r}"
    values = {k: unquote(v) for k, v in parse_env_file(out).items()}
    assert values["LANGFUSE_INIT_USER_EMAIL"] == "me@example.com"
    assert values["LANGFUSE_INIT_USER_NAME"] == "me"
    assert values["LANGFUSE_INIT_USER_PASSWORD"].replace("$$", "$").replace('\\"', '"').replace("\\\\", "\\") == HOSTILE
    assert mode(out) == 0o600


def test_existing_file_is_refused_before_any_prompt(tmp_path):
    _, out = gen_ok(tmp_path)
    term = Terminal(["bash", str(GENERATE_ENV), "--output", str(out)], clean_env(tmp_path))
    assert term.finish() == 1
    screen = term.screen.decode(errors="replace")
    assert "already exists" in screen and "Email" not in screen


def test_secret_vars_list_matches_what_the_script_generates(tmp_path):
    # keeps SECRET_VARS (shared with test_compose) honest: all are written, all non-empty
    _, out = gen_ok(tmp_path)
    values = {k: unquote(v) for k, v in parse_env_file(out).items()}
    for name in SECRET_VARS:
        assert values.get(name), name
