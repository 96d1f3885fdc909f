#!/usr/bin/env python3
"""Install/uninstall helper for install-hook.sh and uninstall-hook.sh (stdlib only).

The shell scripts own the virtualenv and pip; everything that touches secrets or JSON
lives here, so no secret ever passes through a shell word or a command line (argv is
visible to every user via ps). Keys reach this program only through its environment
or the .env file it parses itself.

Subcommands:
  pin --pyproject FILE            print the runtime requirements from pyproject.toml, one per line
  satisfies REQUIREMENT...        (run with the venv's python) exit 0 if every one is installed, fits and imports
  preflight  --home H --repo R --env-file F [--env-file-given]
  apply      --home H --repo R --env-file F [--env-file-given]
  check      --home H             run the installed hook's status/doctor; never fails
  uninstall  --home H [--purge]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HOOK_EVENTS = (
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
# facts only (the worker merges them; nothing waits for them): Claude Code runs these in the
# background, so no prompt, tool call or permission dialog is held up by tracing
ASYNC_EVENTS = ("PermissionRequest", "PostToolUse", "PostToolUseFailure", "SubagentStart", "SessionStart")
KEY_NAMES = ("CC_LANGFUSE_PUBLIC_KEY", "CC_LANGFUSE_SECRET_KEY", "CC_LANGFUSE_BASE_URL")
ENV_PUBLIC = "LANGFUSE_INIT_PROJECT_PUBLIC_KEY"
ENV_SECRET = "LANGFUSE_INIT_PROJECT_SECRET_KEY"
ENV_PORT = "LANGFUSE_PORT"  # generate-env.sh: host port of the web UI
ENV_BIND = "LANGFUSE_BIND_ADDRESS"
DEFAULT_PORT = 3050
RECORD_NAME = "install-record.json"
STATE_FILES = ("langfuse_state.json", "pending_traces.jsonl", "dead_traces.jsonl", "langfuse_sender.json")


class UserError(Exception):
    """A problem the user must fix; printed without a traceback."""


# --------------------------------------------------------------------------- places


class Places:
    def __init__(self, home: str):
        self.home = Path(home)
        self.claude = self.home / ".claude"
        self.settings = self.claude / "settings.json"
        self.lf = self.claude / "langfuse"
        self.venv = self.lf / "venv"
        self.venv_python = self.venv / "bin" / "python"
        self.hook = self.lf / "langfuse_hook.py"  # the thin entry Claude Code runs
        self.package = self.lf / PACKAGE  # what the entry imports
        self.insights = self.lf / "insights.py"
        self.skill_dir = self.claude / "skills" / "langfuse-insights"
        self.skill = self.skill_dir / "SKILL.md"
        self.slash_command = self.claude / "commands" / "langfuse.md"  # /langfuse (the plugin's commands/langfuse.md)
        self.config = self.lf / "config.json"
        self.record = self.lf / RECORD_NAME
        self.default_state = self.claude / "state"

    def command(self) -> str:
        # The entry by path, never `-m`: `-m` puts the working directory (the user's project) first
        # on sys.path, so a project's json.py or langfuse_hook.py would shadow ours. -I also drops
        # PYTHONPATH and user site-packages. The entry is tiny (compiled per run); the package it
        # imports runs from the bytecode compiled at install time.
        return f"{sh_double_quote(str(self.venv_python))} -I {sh_double_quote(str(self.hook))}"

    def argv(self, *args: str) -> list[str]:
        """The registered command as argv (no shell), with a subcommand."""
        return [str(self.venv_python), "-I", str(self.hook), *args]


PACKAGE = "claude_code_langfuse"
# What installs before the package split left behind: they registered `<venv python> -m
# langfuse_hook`, found through this .pth in the venv's site-packages (pointing at ~/.claude/langfuse),
# and compiled ~/.claude/langfuse/__pycache__/langfuse_hook.cpython-*.pyc.
LEGACY_MODULE = "langfuse_hook"
LEGACY_PTH = "claude_code_langfuse.pth"


def sh_double_quote(s: str) -> str:
    # Claude Code runs `command` through sh; inside double quotes only these four are special.
    return '"' + re.sub(r'([\\"$`])', r"\\\1", s) + '"'


def tilde(path: Path, home: Path) -> str:
    try:
        return "~/" + str(path.relative_to(home))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- files


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Temp file in the target's directory + rename: readers see the old or the new file."""
    path = Path(os.path.realpath(path))  # keep a dotfiles symlink pointing at its target
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def backup(path: Path) -> Path:
    """Timestamped 0600 copy next to `path` (settings may hold secrets in `env`)."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    data = path.read_bytes()
    n = 0
    while True:
        cand = path.with_name(f"{path.name}.bak-{stamp}" + (f"-{n}" if n else ""))
        try:
            fd = os.open(cand, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            n += 1
            continue
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return cand


def file_mode(path: Path, default: int) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return default


def _no_duplicate_keys(pairs):
    seen = {}
    for k, v in pairs:
        if k in seen:
            raise ValueError(f"duplicate key {k!r}")
        seen[k] = v
    return seen


def load_json_object(path: Path, what: str) -> tuple[dict | None, bytes | None]:
    """(object, raw bytes), or (None, None) if the file does not exist."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from e
    return parse_json_object(raw, path, what), raw


def parse_json_object(raw: bytes, path: Path, what: str) -> dict:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 (byte {e.start}); nothing was changed. Fix {what} and run this again.") from e
    if not text.strip():
        return {}
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise UserError(
            f"{path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno} "
            f"(char {e.pos}). Nothing was changed. Fix {what} (or move it away) "
            f"and run this again."
        ) from e
    except ValueError as e:  # duplicate key: rewriting would silently drop one of them
        raise UserError(
            f"{path} has a {e}; Claude Code keeps only one of them and a rewrite "
            f"would drop the other. Nothing was changed. Remove the duplicate "
            f"and run this again."
        ) from e
    if not isinstance(obj, dict):
        raise UserError(f"{path} must contain a JSON object ({{...}}), found {type(obj).__name__}. Nothing was changed.")
    return obj


def dump_json(obj: dict) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# --------------------------------------------------------------------------- .env

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_DQ_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "$": "$"}


def parse_env_file(path: Path) -> dict[str, str]:
    """Read a Compose .env as data (never through a shell): values may hold any character.

    Compose rules as generate-env.sh writes them: '...' is literal; inside "..." a backslash
    escapes the next character and $$ stands for $; unquoted values end at whitespace + #.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start})") from e
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from e
    out: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("export ") or s.startswith("export\t"):
            s = s[7:].lstrip()
        name, eq, rest = s.partition("=")
        name = name.strip()
        if not eq or not _ENV_NAME.fullmatch(name):
            raise UserError(f"{path} line {lineno}: expected NAME=VALUE")
        rest = rest.lstrip()
        if rest[:1] == "'":
            end = rest.find("'", 1)
            if end < 0:
                raise UserError(f"{path} line {lineno}: unterminated single quote in {name}")
            value = rest[1:end]
        elif rest[:1] == '"':
            buf, i = [], 1
            while True:
                if i >= len(rest):
                    raise UserError(f"{path} line {lineno}: unterminated double quote in {name}")
                c = rest[i]
                if c == "\\" and i + 1 < len(rest):
                    buf.append(_DQ_ESCAPES.get(rest[i + 1], "\\" + rest[i + 1]))
                    i += 2
                elif c == "$" and rest[i + 1 : i + 2] == "$":
                    buf.append("$")
                    i += 2
                elif c == '"':
                    break
                else:
                    buf.append(c)
                    i += 1
            value = "".join(buf)
        else:
            value = re.split(r"\s#", rest, maxsplit=1)[0].strip().replace("$$", "$")
        out[name] = value
    return out


def _local_host(bind: str) -> str:
    # The stack publishes the UI on LANGFUSE_BIND_ADDRESS; loopback/wildcard -> localhost.
    b = bind.strip()
    if b in ("", "127.0.0.1", "0.0.0.0", "[::]", "[::1]", "::", "::1", "localhost"):
        return "localhost"
    if ":" in b and not b.startswith("["):
        return f"[{b}]"
    return b


def resolve_keys(env_file: Path, env_file_given: bool) -> tuple[dict[str, str], dict[str, str]]:
    """Environment first, then the .env file; returns (values, where each came from)."""
    file_vals: dict[str, str] = {}
    if env_file.is_file():
        file_vals = parse_env_file(env_file)
    elif env_file_given:
        raise UserError(f"--env-file {env_file}: no such file")
    vals: dict[str, str] = {}
    src: dict[str, str] = {}
    for key, file_key in (("CC_LANGFUSE_PUBLIC_KEY", ENV_PUBLIC), ("CC_LANGFUSE_SECRET_KEY", ENV_SECRET)):
        if os.environ.get(key, "").strip():
            vals[key], src[key] = os.environ[key].strip(), f"environment ${key}"
        elif file_vals.get(file_key, "").strip():
            vals[key], src[key] = file_vals[file_key].strip(), f"{env_file} {file_key}"
    if os.environ.get("CC_LANGFUSE_BASE_URL", "").strip():
        vals["CC_LANGFUSE_BASE_URL"] = os.environ["CC_LANGFUSE_BASE_URL"].strip()
        src["CC_LANGFUSE_BASE_URL"] = "environment $CC_LANGFUSE_BASE_URL"
    else:
        port = file_vals.get(ENV_PORT, "").strip() or str(DEFAULT_PORT)
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(f"{env_file} {ENV_PORT}={port!r} is not a port number (1-65535)")
        host = _local_host(file_vals.get(ENV_BIND, ""))
        vals["CC_LANGFUSE_BASE_URL"] = f"http://{host}:{int(port)}"
        src["CC_LANGFUSE_BASE_URL"] = f"{env_file} {ENV_PORT}" if file_vals.get(ENV_PORT, "").strip() else f"default port {DEFAULT_PORT}"

    missing = [k for k in KEY_NAMES[:2] if k not in vals]
    if missing:
        have_file = env_file.is_file()
        lines = [f"no Langfuse {' and '.join(k.split('_')[2].lower() + ' key' for k in missing)} found."]
        if have_file:
            lines.append(
                f"  {env_file} does not set "
                + " / ".join(f for k, f in ((KEY_NAMES[0], ENV_PUBLIC), (KEY_NAMES[1], ENV_SECRET)) if k in missing)
                + "."
            )
        else:
            lines.append(f"  {env_file} does not exist.")
        lines += [
            "Give the keys one of two ways:",
            "  1. local stack: run scripts/generate-env.sh (it writes .env with the project keys),",
            "     or pass --env-file PATH to such a file;",
            "  2. any Langfuse server (Cloud, your team's): set CC_LANGFUSE_PUBLIC_KEY,",
            "     CC_LANGFUSE_SECRET_KEY and CC_LANGFUSE_BASE_URL (e.g. https://cloud.langfuse.com)",
            "     in the environment of this command.",
        ]
        raise UserError("\n".join(lines))
    url = vals["CC_LANGFUSE_BASE_URL"].rstrip("/")
    if not re.match(r"https?://[^/\s]+", url):
        raise UserError(f"base URL {url!r} (from {src['CC_LANGFUSE_BASE_URL']}) must start with http:// or https:// and name a host")
    vals["CC_LANGFUSE_BASE_URL"] = url
    if vals["CC_LANGFUSE_PUBLIC_KEY"].startswith("sk-lf-") or vals["CC_LANGFUSE_SECRET_KEY"].startswith("pk-lf-"):
        raise UserError(
            "the public and secret keys look swapped (public keys start with pk-lf-, secret keys with sk-lf-); nothing was changed"
        )
    return vals, src


# --------------------------------------------------------------------------- settings


def _refers_to(handler, hook_path: Path, home: Path) -> bool:
    if not isinstance(handler, dict) or handler.get("type") != "command":
        return False
    cmd = handler.get("command")
    if not isinstance(cmd, str):
        return False
    try:
        words = shlex.split(cmd)
    except ValueError:
        words = cmd.split()
    venv_python = os.path.normpath(str(hook_path.parent / "venv" / "bin" / "python"))
    if len(words) == 3 and words[1:] == ["-m", LEGACY_MODULE] and os.path.normpath(words[0]) == venv_python:
        return True
    target = os.path.normpath(str(hook_path))
    for w in words:
        w = w.replace("${HOME}", str(home)).replace("$HOME", str(home))
        if w.startswith("~/"):
            w = str(home) + w[1:]
        if os.path.normpath(w) == target:
            return True
    return False


def _hooks_table(settings: dict, path: Path) -> dict:
    hooks = settings.get("hooks", {})
    if not isinstance(hooks, dict):
        raise UserError(f'{path}: "hooks" must be an object; nothing was changed')
    for event, groups in hooks.items():
        if not isinstance(groups, list):
            raise UserError(f'{path}: "hooks"."{event}" must be a list; nothing was changed')
    return hooks


def merge_ours(settings: dict, places: Places, path: Path) -> dict:
    """Settings with exactly one handler of ours per event; everything else as it was."""
    new = json.loads(json.dumps(settings))
    hooks = _hooks_table(new, path)
    cmd = places.command()
    for event in HOOK_EVENTS:
        kept_one = False
        groups = []
        for g in hooks.get(event, []):
            if isinstance(g, dict) and isinstance(g.get("hooks"), list):
                handlers = []
                for h in g["hooks"]:
                    if _refers_to(h, places.hook, places.home):
                        if kept_one:
                            continue  # a duplicate of ours: Claude Code would run it twice
                        kept_one = True
                        if h.get("command") != cmd:  # stale path from an older install
                            h = dict(h, command=cmd)
                        if event in ASYNC_EVENTS and h.get("async") is not True:
                            h = dict(h, **{"async": True})
                    handlers.append(h)
                if g["hooks"] and not handlers:
                    continue  # the group held only duplicates of ours
                g["hooks"] = handlers
            groups.append(g)
        if not kept_one:
            groups.append({"hooks": [{"type": "command", "command": cmd, **({"async": True} if event in ASYNC_EVENTS else {})}]})
        hooks[event] = groups
    new["hooks"] = hooks
    return new


def remove_ours(settings: dict, places: Places, path: Path) -> dict:
    """Settings without any handler of ours; containers emptied by that removal go too."""
    new = json.loads(json.dumps(settings))
    if "hooks" not in new:
        return new
    hooks = _hooks_table(new, path)
    for event in list(hooks):
        groups = hooks[event]
        out = []
        for g in groups:
            if isinstance(g, dict) and isinstance(g.get("hooks"), list):
                before = len(g["hooks"])
                g["hooks"] = [h for h in g["hooks"] if not _refers_to(h, places.hook, places.home)]
                if before and not g["hooks"]:
                    continue
            out.append(g)
        if groups and not out:
            del hooks[event]
        else:
            hooks[event] = out
    if settings.get("hooks") and not hooks:
        del new["hooks"]
    return new


def has_ours(settings: dict, places: Places) -> bool:
    hooks = settings.get("hooks")
    if not isinstance(hooks, dict):
        return False
    return any(
        _refers_to(h, places.hook, places.home)
        for groups in hooks.values()
        if isinstance(groups, list)
        for g in groups
        if isinstance(g, dict) and isinstance(g.get("hooks"), list)
        for h in g["hooks"]
    )


# --------------------------------------------------------------------------- commands


def cmd_pin(args) -> int:
    import tomllib

    try:
        data = tomllib.loads(Path(args.pyproject).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"cannot read the langfuse pin from {args.pyproject}: {e}") from e
    deps = [d for d in data.get("project", {}).get("dependencies", []) if isinstance(d, str) and d.strip()]
    if not any(re.match(r"langfuse\s*(\[|[<>=!~;]|$)", dep) for dep in deps):
        raise UserError(f"{args.pyproject} lists no langfuse dependency")
    # every runtime dependency (langfuse, and genai-prices for `models sync` and insights' local cost)
    print("\n".join(deps))
    return 0


def cmd_satisfies(args) -> int:
    """Run with the venv's interpreter: lets a reinstall skip pip (offline, fast)."""
    from importlib import metadata

    try:
        from packaging.requirements import Requirement  # a dependency of langfuse itself
    except ImportError:
        return 1
    found = []
    for text in args.requirement:
        req = Requirement(text)
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            print(f"{req.name} is not installed")
            return 1
        if not req.specifier.contains(version, prereleases=True):
            print(f"installed {req.name} {version} does not satisfy {req}")
            return 1
        try:
            __import__(req.name.replace("-", "_"))
        except Exception as e:  # a half-installed dependency set: let pip repair it
            print(f"{req.name} {version} is installed but does not import ({type(e).__name__}: {e})")
            return 1
        found.append(f"{req.name} {version}")
    print(", ".join(found))
    return 0


def _preflight(args) -> tuple[Places, dict, dict, dict | None, bytes | None, dict | None]:
    places = Places(args.home)
    for src in (Path(args.repo) / "hooks" / "langfuse_hook.py", Path(args.repo) / "hooks" / PACKAGE / "__init__.py"):
        if not src.is_file():
            raise UserError(f"{src} not found: run this script from a complete checkout")
    vals, src = resolve_keys(Path(args.env_file), args.env_file_given)
    settings, raw = load_json_object(places.settings, "~/.claude/settings.json")
    if settings is not None:
        merge_ours(settings, places, places.settings)  # validates the hooks table's shape
    config, _ = load_json_object(places.config, f"{places.config}")
    return places, vals, src, settings, raw, config


PLUGIN_COMMAND_RUN = 'python3 -I "${CLAUDE_PLUGIN_ROOT}/hooks/langfuse_hook.py"'
PLUGIN_COMMAND_RULE = "Bash(python3 -I:*)"
SLASH_MARK = "langfuse_hook.py slash"  # a langfuse.md holding this is ours (install overwrites it, uninstall removes it)


def render_slash_command(text: str, places: Places) -> str:
    """The plugin's commands/langfuse.md for the script install: the venv's python and the installed entry."""
    python, hook = shlex.quote(str(places.venv_python)), shlex.quote(str(places.hook))
    if PLUGIN_COMMAND_RUN not in text or PLUGIN_COMMAND_RULE not in text:
        raise UserError("commands/langfuse.md does not hold the command line the installer rewrites; is the repo complete?")
    return text.replace(PLUGIN_COMMAND_RUN, f"{python} -I {hook}").replace(PLUGIN_COMMAND_RULE, f"Bash({python} -I:*)")


def is_our_slash_command(path: Path) -> bool:
    try:
        return SLASH_MARK in path.read_text(encoding="utf-8", errors="replace").replace('" slash', " slash")
    except OSError:
        return False


def install_slash_command(src: Path, places: Places, home: Path) -> None:
    if not src.is_file():
        return
    dst = places.slash_command
    if (dst.exists() or dst.is_symlink()) and not is_our_slash_command(dst):
        print(f"warning: {tilde(dst, home)} exists and is not ours: /langfuse not installed (rename yours to get it)", file=sys.stderr)
        return
    data = render_slash_command(src.read_text(encoding="utf-8"), places).encode()
    if dst.is_file() and dst.read_bytes() == data and file_mode(dst, 0) == 0o644:
        return
    dst.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(dst, data, 0o644)
    print(f"copied {tilde(dst, home)} (the /langfuse command)")


def copy_file(src: Path, dst: Path) -> bool:
    """dst = src's bytes with mode 0644; False when it already was."""
    data = src.read_bytes()
    if dst.is_file() and dst.read_bytes() == data and file_mode(dst, 0) == 0o644:
        return False
    atomic_write(dst, data, 0o644)
    return True


def _module_sources(folder: Path) -> set[Path]:
    """The package's *.py files, relative to it (subpackages included, bytecode caches skipped)."""
    return {p.relative_to(folder) for p in folder.rglob("*.py") if "__pycache__" not in p.parts and p.is_file()}


def _drop_bytecode(py: Path) -> None:
    for pyc in (py.parent / "__pycache__").glob(py.stem + ".*.pyc"):
        pyc.unlink(missing_ok=True)


def sync_package(src: Path, dst: Path) -> tuple[list[Path], list[Path]]:
    """Make dst hold exactly src's modules: copies what differs, removes modules (and their
    bytecode) that the repo no longer has. Returns (written, removed), relative paths."""
    want = _module_sources(src)
    dst.mkdir(mode=0o700, exist_ok=True)
    written: list[Path] = []
    for rel in sorted(want):
        (dst / rel).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if copy_file(src / rel, dst / rel):
            # the new file gets a new mtime, but a same-size edit within the same second would
            # still match the old bytecode's header: drop it, the compile step below redoes it
            _drop_bytecode(dst / rel)
            written.append(rel)
    removed: list[Path] = []
    for rel in sorted(_module_sources(dst) - want):
        (dst / rel).unlink()
        _drop_bytecode(dst / rel)
        removed.append(rel)
    # bytecode whose module is gone (removed above, or by hand since)
    for cache in sorted(dst.rglob("__pycache__"), reverse=True):
        if not cache.is_dir() or cache.is_symlink():
            continue
        for pyc in cache.glob("*.pyc"):
            if not (cache.parent / (pyc.name.split(".", 1)[0] + ".py")).is_file():
                pyc.unlink()
        if not any(cache.iterdir()):
            cache.rmdir()
    for folder in sorted((p for p in dst.rglob("*") if p.is_dir() and not p.is_symlink()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()  # a subpackage the repo dropped
    return written, removed


def compile_package(places: Places) -> None:
    """Byte-compile the installed package with the venv's Python, so the first hook run already
    imports bytecode. Timestamp-checked pycs, whatever SOURCE_DATE_EPOCH says (hash-checked ones
    would hash every module's source on every run)."""
    if not places.venv_python.exists():
        return
    p = subprocess.run(
        [str(places.venv_python), "-I", "-m", "compileall", "-q", "--invalidation-mode", "timestamp", str(places.package)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        raise UserError(f"could not byte-compile {places.package} with {places.venv_python}:\n{(p.stdout + p.stderr).strip()}")


def remove_legacy(places: Places) -> list[Path]:
    """What an install from before the package split left behind and nothing uses any more: the
    bytecode of the old single-file hook.

    Its .pth (which puts ~/.claude/langfuse on the venv's sys.path) stays until uninstall: a Claude
    Code session started before the upgrade may still run the old `<venv python> -m langfuse_hook`
    command, which finds the new entry file through it and keeps working. New registrations run
    the entry by path with -I and do not use it."""
    gone: list[Path] = []
    cache = places.lf / "__pycache__"
    if cache.is_dir() and not cache.is_symlink():
        for pyc in sorted(cache.glob(f"{LEGACY_MODULE}.*.pyc")):
            pyc.unlink()
            gone.append(pyc)
        if not any(cache.iterdir()):
            cache.rmdir()
            gone.append(cache)
    return gone


def cmd_preflight(args) -> int:
    _preflight(args)
    return 0


def cmd_apply(args) -> int:
    places, vals, src, settings, raw, config = _preflight(args)
    home = places.home
    for d in (places.claude, places.lf):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)

    # Remember the file as it was before our first install, so uninstall can put back the
    # exact bytes when nothing else changed in the meantime.
    if not places.record.exists():
        rec = {"version": 1, "settings_existed": raw is not None, "settings_original": raw.decode("utf-8") if raw is not None else None}
        atomic_write(places.record, dump_json(rec), 0o600)

    hooks_src = Path(args.repo) / "hooks"
    # The package first, compiled, then the entry that imports it: a hook run in between still
    # finds a complete package (an install from before the split has none and runs its old file).
    written, removed = sync_package(hooks_src / PACKAGE, places.package)
    compile_package(places)
    if written or removed:
        what = [f"{len(written)} module(s) copied"] + ([f"{len(removed)} no longer shipped removed"] if removed else [])
        print(f"package {tilde(places.package, home)}/: {', '.join(what)}, byte-compiled")
    else:
        print(f"package {tilde(places.package, home)}/ already up to date")
    if copy_file(hooks_src / "langfuse_hook.py", places.hook):
        print(f"hook copied to {tilde(places.hook, home)}")
    else:
        print(f"hook {tilde(places.hook, home)} already up to date")

    # the insights report sits next to the hook (a thin entry into the package too); its skill lets Claude run it
    for extra_src, extra_dst in (
        (hooks_src / "insights.py", places.insights),
        (Path(args.repo) / "skills" / "langfuse-insights" / "SKILL.md", places.skill),
    ):
        if extra_src.is_file():
            extra_dst.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if copy_file(extra_src, extra_dst):
                print(f"copied {tilde(extra_dst, home)}")

    install_slash_command(Path(args.repo) / "commands" / "langfuse.md", places, home)

    new_config = dict(config or {})
    new_config.update(vals)
    if new_config != config or file_mode(places.config, 0) != 0o600:
        atomic_write(places.config, dump_json(new_config), 0o600)
        print(f"keys written to {tilde(places.config, home)} (mode 0600)")
    else:
        print(f"keys in {tilde(places.config, home)} already up to date")
    for k in KEY_NAMES:
        shown = vals[k] if k != "CC_LANGFUSE_SECRET_KEY" else "(hidden)"
        print(f"  {k} = {shown}   [from {src[k]}]")

    new_settings = merge_ours(settings if settings is not None else {}, places, places.settings)
    if settings is not None and new_settings == settings:
        print(f"{tilde(places.settings, home)} already has the hook for {', '.join(HOOK_EVENTS)}")
    else:
        if raw is not None:
            b = backup(places.settings)
            print(f"backup of {tilde(places.settings, home)}: {tilde(b, home)}")
        atomic_write(places.settings, dump_json(new_settings), file_mode(places.settings, 0o600))
        print(f"hook registered in {tilde(places.settings, home)} for {', '.join(HOOK_EVENTS)}")
    # Only now: until the line above, an older install's `-m langfuse_hook` entries needed them.
    legacy = remove_legacy(places)
    for p in legacy:
        print(f"removed {tilde(p, home)} (left by an older install)")
    if legacy:
        print(
            "note: Claude Code sessions started before this upgrade keep running the old command\n"
            "  (`... -m langfuse_hook`), which still works; they use the new command once restarted."
        )

    ccd = os.environ.get("CLAUDE_CONFIG_DIR")
    if ccd and os.path.realpath(os.path.expanduser(ccd)) != os.path.realpath(places.claude):
        print(
            f"warning: CLAUDE_CONFIG_DIR={ccd} is set, so Claude Code reads its settings from "
            f"there, not from {places.settings}; the hook will not run in those sessions.",
            file=sys.stderr,
        )
    # Hook point: copying the repo's Claude Code skill (skills/) would go here.
    return 0


def _run_hook(places: Places, sub: str, timeout: float) -> int | None:
    try:
        p = subprocess.run(
            places.argv(sub),  # exactly as Claude Code runs it (-I), from here
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        print(f"  ({sub} did not finish within {timeout:.0f} s)")
        return None
    except OSError as e:
        print(f"  (could not run {sub}: {e})")
        return None
    text = p.stdout.decode("utf-8", "replace").rstrip()
    for line in text.splitlines():
        print("  " + line)
    return p.returncode


def cmd_check(args) -> int:
    places = Places(args.home)
    home = places.home
    print("\nHook status:")
    rc = _run_hook(places, "status", 30)
    if rc not in (0, None):
        print(f"  (status exited with {rc})")
    print("\nHealth checks (doctor):")
    rc = _run_hook(places, "doctor", 60)
    if rc != 0:
        print(
            "  Some checks did not pass (see above). The hook is installed anyway: turns are\n"
            "  queued on disk and sent once the server is reachable and the keys are right."
        )
    print(f"""
Done. What next:
  - Start Claude Code (running sessions pick the hook up on their own): each finished
    turn is sent to Langfuse as a trace.
  - See what the hook is doing:  {" ".join(shlex.quote(a) for a in places.argv("status"))}
  - Turn tracing off for one project: add "TRACE_TO_LANGFUSE": "false" to "env" in that
    project's .claude/settings.local.json.
  - Keys and server live in {tilde(places.config, home)}; run the installer again to change them.
  - Remove everything: {shlex.quote(str(Path(__file__).resolve().parent / "uninstall-hook.sh"))}""")
    return 0


def _state_dir(places: Places) -> Path:
    if os.environ.get("CC_LANGFUSE_STATE_DIR"):
        return Path(os.path.expanduser(os.environ["CC_LANGFUSE_STATE_DIR"]))
    try:
        cfg, _ = load_json_object(places.config, str(places.config))
    except UserError:
        cfg = None
    if cfg and isinstance(cfg.get("CC_LANGFUSE_STATE_DIR"), str) and cfg["CC_LANGFUSE_STATE_DIR"]:
        return Path(os.path.expanduser(cfg["CC_LANGFUSE_STATE_DIR"]))
    return places.default_state


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return 0


def cmd_uninstall(args) -> int:
    places = Places(args.home)
    home = places.home
    state = _state_dir(places)  # before config.json is gone
    settings, raw = load_json_object(places.settings, "~/.claude/settings.json")
    record = None
    try:
        record, _ = load_json_object(places.record, str(places.record))
    except UserError:
        record = None

    # Settings first: once the files are gone, a leftover entry would fail on every turn.
    if settings is not None:
        new = remove_ours(settings, places, places.settings)
        restored: bytes | None = None
        remove_file = False
        if record and has_ours(settings, places):
            if record.get("settings_existed") and isinstance(record.get("settings_original"), str):
                orig_raw = record["settings_original"].encode("utf-8")
                try:
                    orig = parse_json_object(orig_raw, places.record, "the install record")
                except UserError:
                    orig = None
                if orig is not None and not has_ours(orig, places) and merge_ours(orig, places, places.settings) == settings:
                    restored = orig_raw
            elif record.get("settings_existed") is False and merge_ours({}, places, places.settings) == settings:
                remove_file = True
        if new == settings and restored is None and not remove_file:
            print(f"{tilde(places.settings, home)} has no hook entries of ours; left as it is")
        elif remove_file:
            # It holds only what the installer wrote from nothing: no backup, no litter.
            places.settings.unlink()
            print(f"removed {tilde(places.settings, home)} (the installer had created it and nothing else was added since)")
        else:
            b = backup(places.settings)
            print(f"backup of {tilde(places.settings, home)}: {tilde(b, home)}")
            if restored is not None:
                atomic_write(places.settings, restored, file_mode(places.settings, 0o600))
                print(f"{tilde(places.settings, home)} restored to its content before the install")
            else:
                atomic_write(places.settings, dump_json(new), file_mode(places.settings, 0o600))
                print(f"hook entries removed from {tilde(places.settings, home)}; the rest is as it was")
    else:
        print(f"{tilde(places.settings, home)} does not exist; nothing to unregister")

    removed = []
    for p in (places.venv, places.package, places.lf / "__pycache__"):  # __pycache__: from installs before the package
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
            removed.append(p)
    for p in (places.hook, places.insights, places.config, places.record, places.skill):
        if p.exists() or p.is_symlink():
            p.unlink()
            removed.append(p)
    if places.skill_dir.is_dir() and not any(places.skill_dir.iterdir()):
        places.skill_dir.rmdir()
    if places.slash_command.is_file() and is_our_slash_command(places.slash_command):
        places.slash_command.unlink()
        removed.append(places.slash_command)
    for p in removed:
        print(f"removed {tilde(p, home)}")
    if places.lf.is_dir():
        left = sorted(x.name for x in places.lf.iterdir())
        if left:
            print(f"kept {tilde(places.lf, home)}: it holds files the installer did not create: " + ", ".join(left))
        else:
            places.lf.rmdir()
            print(f"removed {tilde(places.lf, home)}")

    pending = _count_lines(state / "pending_traces.jsonl")
    dead = _count_lines(state / "dead_traces.jsonl")
    if args.purge:
        gone = [state / n for n in STATE_FILES if (state / n).exists()]
        gone += sorted(state.glob("langfuse_hook.log*")) if state.is_dir() else []
        for p in gone:
            p.unlink()
        for folder in ("inbox", "locks"):  # inbox: hook events the worker has not read yet
            if (state / folder).is_dir() and not (state / folder).is_symlink():
                shutil.rmtree(state / folder)
                gone.append(state / folder)
        for p in gone:
            print(f"removed {tilde(p, home)}")
        if pending:
            print(f"note: {pending} queued trace(s) that had not been sent were deleted")
    elif state.is_dir():
        msg = f"kept the hook's state, queue and log in {tilde(state, home)}"
        if pending or dead:
            msg += f" ({pending} queued, {dead} dead-letter trace(s)); reinstall to send them"
        print(msg + "; remove them with: scripts/uninstall-hook.sh --purge")
    print("Uninstalled.")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="settings_merge.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pin")
    p.add_argument("--pyproject", required=True)
    p = sub.add_parser("satisfies")
    p.add_argument("requirement", nargs="+")
    for name in ("preflight", "apply"):
        p = sub.add_parser(name)
        p.add_argument("--home", required=True)
        p.add_argument("--repo", required=True)
        p.add_argument("--env-file", required=True)
        p.add_argument("--env-file-given", action="store_true")
    p = sub.add_parser("check")
    p.add_argument("--home", required=True)
    p = sub.add_parser("uninstall")
    p.add_argument("--home", required=True)
    p.add_argument("--purge", action="store_true")
    args = ap.parse_args(argv)
    handler = {
        "pin": cmd_pin,
        "satisfies": cmd_satisfies,
        "preflight": cmd_preflight,
        "apply": cmd_apply,
        "check": cmd_check,
        "uninstall": cmd_uninstall,
    }[args.cmd]
    try:
        return handler(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
