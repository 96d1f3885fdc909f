"""Settings (environment first, then the config file) and the log.

Imported by the hook: keep it light. No `json`, `collections` or `typing` at module level (each
costs every hook event milliseconds of start-up, see docs/benchmarks.md): the hook itself never
parses the config file (`hook_settings`), only the worker and the commands do (`load_settings`).
"""

import os
import sys

HOOK_VERSION = "0.1.0"
RECORD_VERSION = 1

# ============================================================================ settings

FALSE_WORDS = {"0", "false", "no", "off", "disable", "disabled"}
DEFAULT_BASE_URL = "http://localhost:3050"
DEFAULT_MAX_FIELD_CHARS = 100_000
DEFAULT_QUEUE_WARN_BYTES = 50 * 1024 * 1024
LOG_MAX_BYTES = 1024 * 1024
LOG_BACKUPS = 3
LOCK_TIMEOUT_S = 3.0


TRUE_WORDS = {"1", "true", "yes", "on", "enable", "enabled"}
MIN_FIELD_CHARS, MAX_FIELD_CHARS = 1000, 10_000_000
DEFAULT_TIMEOUT_S, MIN_TIMEOUT_S, MAX_TIMEOUT_S = 10.0, 0.5, 300.0
DEFAULT_RETRY_FOR_S, MAX_RETRY_FOR_S = 600.0, 86400.0
MAX_QUEUE_WARN_MB = 1_000_000.0
MAX_TAGS, MAX_TAG_CHARS = 20, 100
MAX_ENVIRONMENT_CHARS = 40  # Langfuse: lowercase letters, digits, - and _, not starting with "langfuse"


def _home(environ=None) -> str:
    """The user's home folder, absolute, or "" when there is none (HOME unset or relative, and no
    passwd entry): never a relative path, which would put our files into the working directory."""
    env = os.environ if environ is None else environ
    home = env.get("HOME") or ""
    if not os.path.isabs(home):
        try:
            import pwd

            home = pwd.getpwuid(os.getuid()).pw_dir
        except (ImportError, KeyError):
            home = ""
    return home if os.path.isabs(home) else ""


def _expand(path: str, environ=None) -> str:
    """~ and ~/x with our _home(); ~user/x as the OS resolves it."""
    if path == "~" or path.startswith("~/"):
        home = _home(environ)
        return home + path[1:] if home else path
    return os.path.expanduser(path) if path.startswith("~") else path


def claude_dir() -> str:
    configured = os.environ.get("CLAUDE_CONFIG_DIR") or ""
    if os.path.isabs(configured):
        return configured
    home = _home()
    return os.path.join(home, ".claude") if home else ""


def default_config_path(environ=None) -> str:
    home = _home(environ)
    return os.path.join(home, ".claude", "langfuse", "config.json") if home else ""


def default_state_dir(environ=None) -> str:
    home = _home(environ)
    return os.path.join(home, ".claude", "state") if home else ""


# Where each setting is read from, first match wins (environment first, then the config file).
# load_settings and the hook's fingerprint (hook_settings) share these, so they cannot drift.
PUBLIC_KEY_NAMES = ("CC_LANGFUSE_PUBLIC_KEY", "CLAUDE_PLUGIN_OPTION_PUBLIC_KEY", "LANGFUSE_PUBLIC_KEY")
SECRET_KEY_NAMES = ("CC_LANGFUSE_SECRET_KEY", "CLAUDE_PLUGIN_OPTION_SECRET_KEY", "LANGFUSE_SECRET_KEY")
BASE_URL_NAMES = ("CC_LANGFUSE_BASE_URL", "CLAUDE_PLUGIN_OPTION_BASE_URL", "LANGFUSE_BASE_URL", "LANGFUSE_HOST")
STATE_DIR_NAME = "CC_LANGFUSE_STATE_DIR"
CONFIG_PATH_NAME = "CC_LANGFUSE_CONFIG"

SETTINGS_DEFAULTS = {
    "enabled": True,
    "public_key": "",
    "secret_key": "",
    "base_url": DEFAULT_BASE_URL,
    "debug": False,
    "user_id": "",
    "max_field_chars": DEFAULT_MAX_FIELD_CHARS,
    "redact": True,
    "redact_patterns": (),
    "timeout": DEFAULT_TIMEOUT_S,
    "retry_for": DEFAULT_RETRY_FOR_S,
    "queue_warn_bytes": DEFAULT_QUEUE_WARN_BYTES,
    "state_dir": "",
    "config_path": "",
    "config_error": "",
    "tags": (),
    "environment": "",
    "content": True,
    "hostname": True,
    "ci": None,
    "sources_fingerprint": "",  # of the key/URL variables and the config file (_sources_fingerprint)
}


class Settings:
    """Every setting, resolved (see docs/design.md, "Configuration"): keyword construction with
    defaults, `_replace`, `_asdict`, equality by value. A plain class on purpose: a namedtuple needs
    `collections` and a dataclass `inspect`, both milliseconds of every hook event."""

    __slots__ = tuple(SETTINGS_DEFAULTS)

    def __init__(self, **values):
        unknown = values.keys() - SETTINGS_DEFAULTS.keys()
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        for name, default in SETTINGS_DEFAULTS.items():
            setattr(self, name, values.get(name, default))

    def _asdict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}

    def _replace(self, **changes) -> "Settings":
        return Settings(**{**self._asdict(), **changes})

    def __eq__(self, other) -> bool:
        return isinstance(other, Settings) and self._asdict() == other._asdict()

    __hash__ = None  # mutable in principle: never a dict key

    def __repr__(self) -> str:
        shown = {k: ("***" if k == "secret_key" and v else v) for k, v in self._asdict().items()}
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    @property
    def has_keys(self) -> bool:
        return bool(self.public_key and self.secret_key)


def _read_config_bytes(path: str) -> tuple[bytes, str]:
    """The config file as stored (b"" when there is none) and an error text."""
    try:
        with open(path, "rb") as f:
            return f.read(), ""
    except FileNotFoundError:
        return b"", ""
    except OSError as e:
        return b"", f"cannot read config file {path}: {e}"


def _parse_config(path: str, data: bytes) -> tuple[dict, str]:
    if not data:
        return {}, ""
    import json  # not at module level: the hook imports this module and never parses the file

    try:
        conf = json.loads(data.decode("utf-8"))
    except ValueError as e:  # UnicodeDecodeError included
        return {}, f"cannot read config file {path}: {e}"
    if not isinstance(conf, dict):
        return {}, f"config file {path} must hold a JSON object"
    return conf, ""


def _config_path(env, problems: list) -> str:
    config_path = env.get(CONFIG_PATH_NAME) or ""
    if config_path:
        config_path = _expand(config_path, env)
        if not os.path.isabs(config_path):
            problems.append(
                f"{CONFIG_PATH_NAME}={config_path!r} is not an absolute path: ignored; using {default_config_path(env) or 'no config file'}"
            )
            config_path = ""
    return config_path or default_config_path(env)


def _state_dir(raw: str | None, env, problems: list) -> str:
    state_dir = raw or ""
    if state_dir:
        state_dir = _expand(state_dir, env)
        if not os.path.isabs(state_dir):
            problems.append(
                f"{STATE_DIR_NAME}={state_dir!r} is not an absolute path (it would put the queue into each project); "
                f"using {default_state_dir(env) or 'none'}"
            )
            state_dir = ""
    state_dir = state_dir or default_state_dir(env)
    if not state_dir:
        problems.append(
            "no state folder: HOME is not set (or not absolute) and the user has no passwd entry; "
            f"nothing is traced until HOME or {STATE_DIR_NAME} names an absolute folder (the transcripts keep the turns: `backfill` later)"
        )
    return state_dir


def sha256_hex(data: bytes) -> str:
    try:  # the builtin module: hashlib would load OpenSSL (~3 ms of every hook event)
        from _sha256 import sha256
    except ImportError:  # Python 3.12+ renamed it
        try:
            from _sha2 import sha256
        except ImportError:
            from hashlib import sha256
    return sha256(data).hexdigest()


def _sources_fingerprint(env, config_path: str, config_bytes: bytes) -> str:
    """What decides where and with which keys a worker sends: the key and URL variables of the
    environment and the config file's bytes. A hook whose fingerprint differs from the running
    worker's starts a new one (runtime.wake_worker). Hashed: the file holds the secret key."""
    parts = [f"{name}={env.get(name) or ''}" for name in (*PUBLIC_KEY_NAMES, *SECRET_KEY_NAMES, *BASE_URL_NAMES)]
    head = "\0".join([*parts, config_path]).encode("utf-8", "surrogateescape")
    return sha256_hex(head + b"\0" + config_bytes)[:16]


class HookSettings:
    """What the hook needs: where the state folder is, whether to log debug lines, and the
    fingerprint of the settings' sources (see _sources_fingerprint)."""

    __slots__ = ("state_dir", "debug", "fingerprint")

    def __init__(self, state_dir: str, debug: bool, fingerprint: str):
        self.state_dir, self.debug, self.fingerprint = state_dir, debug, fingerprint


def hook_settings(environ=None) -> HookSettings:
    """The hook's settings without parsing the config file (no `json` import: a third of the hook's
    start-up). The file is parsed only when it may move the state folder or turn on debug logging;
    its problems are the worker's and `status`'s to report, not every event's."""
    env = os.environ if environ is None else environ
    config_path = _config_path(env, [])
    config_bytes = _read_config_bytes(config_path)[0] if config_path else b""
    fingerprint = _sources_fingerprint(env, config_path, config_bytes)
    raw_state_dir, debug = env.get(STATE_DIR_NAME), env.get("CC_LANGFUSE_DEBUG")
    if (not raw_state_dir and STATE_DIR_NAME.encode() in config_bytes) or (not debug and b"CC_LANGFUSE_DEBUG" in config_bytes):
        settings = load_settings(env)  # rare: the config file sets them
        return HookSettings(settings.state_dir, settings.debug, fingerprint)
    return HookSettings(_state_dir(raw_state_dir, env, []), (debug or "").strip().lower() in TRUE_WORDS, fingerprint)


def _is_http_url(url: str) -> bool:
    """http(s)://host[:port][/path], checked without urllib (the hook imports this module)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return False
    netloc = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rpartition("@")[2]
    if netloc.startswith("["):  # [IPv6]:port
        host, _, port = netloc[1:].partition("]")
        port = port[1:] if port.startswith(":") else ("x" if port else "")
    else:
        host, _, port = netloc.partition(":")
    if not host or any(c.isspace() for c in url):
        return False
    return not port or (port.isdigit() and 0 < int(port) < 65536)


def load_settings(environ: dict | None = None) -> Settings:
    """Every setting resolved. Never raises: a setting that makes no sense falls back to its
    default (or the nearest allowed value) and says so in `config_error`, which the worker's log,
    `status` and `doctor` show. Paths must be absolute: nothing is ever written relative to the
    working directory (for the hook, the user's project)."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    config_path = _config_path(env, problems)
    conf: dict = {}
    data = b""
    if config_path:
        data, error = _read_config_bytes(config_path)
        conf, parse_error = _parse_config(config_path, data)
        if error or parse_error:
            problems.append(error or parse_error)

    def get(*names: str) -> str | None:
        # by name first: a CC_LANGFUSE_* key in the config file beats a LANGFUSE_* variable that
        # the user exported for their own applications
        for name in names:
            for source in (env, conf):
                value = source.get(name)
                if value not in (None, ""):
                    if isinstance(value, str):
                        return value
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        return str(value)
                    import json

                    return json.dumps(value)
        return None

    def flag(name: str, default: bool) -> bool:
        raw = get(name)
        if raw is None:
            return default
        word = raw.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        problems.append(f"{name}={raw!r} is neither true nor false; using {'true' if default else 'false'}")
        return default

    def number(name: str, default: float, low: float, high: float, unit: str = "") -> float:
        raw = get(name)
        if raw is None:
            return default
        try:
            value = float(raw.strip())
        except (ValueError, OverflowError):
            value = float("nan")
        if value != value or value in (float("inf"), float("-inf")) or value <= 0:
            problems.append(f"{name}={raw!r} is not a positive number; using {default:g}{unit}")
            return default
        if not low <= value <= high:
            nearest = low if value < low else high
            problems.append(f"{name}={raw!r} is outside {low:g}..{high:g}; using {nearest:g}{unit}")
            return nearest
        return value

    patterns_raw = env.get("CC_LANGFUSE_REDACT_PATTERNS")
    if patterns_raw:
        patterns = [p for p in patterns_raw.splitlines() if p.strip()]
    else:
        conf_patterns = conf.get("CC_LANGFUSE_REDACT_PATTERNS") or []
        if isinstance(conf_patterns, str):
            patterns = [conf_patterns]
        elif isinstance(conf_patterns, list):
            patterns = [p for p in conf_patterns if isinstance(p, str)]
        else:
            problems.append("CC_LANGFUSE_REDACT_PATTERNS in the config file must be a list of regexes; ignored")
            patterns = []
    user_id = get("CC_LANGFUSE_USER_ID") or ""
    if not user_id:
        user_id = env.get("USER") or env.get("LOGNAME") or ""
        if not user_id:
            try:
                import pwd

                user_id = pwd.getpwuid(os.getuid()).pw_name
            except (ImportError, KeyError):
                user_id = "unknown"
    base_url = get(*BASE_URL_NAMES) or DEFAULT_BASE_URL
    if not _is_http_url(base_url.strip().rstrip("/")):
        problems.append(f"the Langfuse base URL {base_url!r} is not an http:// or https:// URL; using {DEFAULT_BASE_URL}")
        base_url = DEFAULT_BASE_URL
    base_url = base_url.strip().rstrip("/")
    state_dir = _state_dir(get(STATE_DIR_NAME), env, problems)
    tags = _tags(get("CC_LANGFUSE_TAGS"), problems)
    environment = _environment(get("CC_LANGFUSE_ENVIRONMENT", "LANGFUSE_TRACING_ENVIRONMENT"), problems)
    return Settings(
        enabled=flag("TRACE_TO_LANGFUSE", True),
        public_key=(get(*PUBLIC_KEY_NAMES) or "").strip(),
        secret_key=(get(*SECRET_KEY_NAMES) or "").strip(),
        base_url=base_url,
        debug=flag("CC_LANGFUSE_DEBUG", False),
        user_id=user_id,
        max_field_chars=int(number("CC_LANGFUSE_MAX_FIELD_CHARS", DEFAULT_MAX_FIELD_CHARS, MIN_FIELD_CHARS, MAX_FIELD_CHARS)),
        redact=flag("CC_LANGFUSE_REDACT", True),
        redact_patterns=patterns,
        timeout=number("CC_LANGFUSE_TIMEOUT", DEFAULT_TIMEOUT_S, MIN_TIMEOUT_S, MAX_TIMEOUT_S, " s"),
        # 0 = never: the worker exits after a failed send and the next event or `drain` retries
        retry_for=0.0
        if (get("CC_LANGFUSE_RETRY_FOR") or "").strip() == "0"
        else number("CC_LANGFUSE_RETRY_FOR", DEFAULT_RETRY_FOR_S, 1.0, MAX_RETRY_FOR_S, " s"),
        queue_warn_bytes=max(
            1, int(number("CC_LANGFUSE_QUEUE_WARN_MB", DEFAULT_QUEUE_WARN_BYTES / 1048576, 1e-6, MAX_QUEUE_WARN_MB, " MB") * 1048576)
        ),
        state_dir=state_dir,
        config_path=config_path,
        tags=tags,
        environment=environment,
        content=flag("CC_LANGFUSE_CONTENT", True),
        hostname=flag("CC_LANGFUSE_HOSTNAME", True),
        config_error="; ".join(problems),
        sources_fingerprint=_sources_fingerprint(env, config_path, data),
    )


def _tags(raw: str | None, problems: list) -> tuple:
    """CC_LANGFUSE_TAGS: comma separated (a JSON list in the config file), trimmed, de-duplicated, bounded."""
    if raw is None:
        return ()
    items: list = []
    if raw.lstrip().startswith("["):
        import json

        try:
            items = [t for t in json.loads(raw) if isinstance(t, str)]
        except (ValueError, TypeError):
            items = raw.strip().strip("[]").split(",")
    else:
        items = raw.split(",")
    tags: list[str] = []
    for tag in items:
        tag = " ".join(tag.split())
        if not tag or tag in tags:
            continue
        if len(tag) > MAX_TAG_CHARS:
            problems.append(f"CC_LANGFUSE_TAGS: the tag {tag[:40]!r}... is longer than {MAX_TAG_CHARS} characters; left out")
            continue
        tags.append(tag)
    if len(tags) > MAX_TAGS:
        problems.append(f"CC_LANGFUSE_TAGS has {len(tags)} tags; only the first {MAX_TAGS} are used")
        tags = tags[:MAX_TAGS]
    return tuple(tags)


def valid_environment(name: str) -> bool:
    """Langfuse's rule for environment names: lowercase letters, digits, - and _, at most 40, not `langfuse...`."""
    return (
        0 < len(name) <= MAX_ENVIRONMENT_CHARS
        and not name.startswith("langfuse")
        and all(c in "abcdefghijklmnopqrstuvwxyz0123456789-_" for c in name)
    )


def _environment(raw: str | None, problems: list) -> str:
    if raw is None:
        return ""
    name = raw.strip()
    if valid_environment(name):
        return name
    problems.append(
        f"CC_LANGFUSE_ENVIRONMENT={raw!r} is not a Langfuse environment name (lowercase letters, digits, - and _, "
        f"at most {MAX_ENVIRONMENT_CHARS} characters, not starting with 'langfuse'); traces go to the 'default' environment"
    )
    return ""


# ============================================================================ log

_LOGGER = None


def get_logger(settings: Settings, stderr: bool = True):
    """A size-rotated file log in the state folder; never stdout (Claude Code reads it).

    Without a usable state folder: stderr for the commands, nothing for the hook (stderr=False:
    Claude Code shows a hook's stderr as a failure; `status` and `doctor` report the problem)."""
    global _LOGGER
    if _LOGGER is not None:
        return _LOGGER
    import logging
    import logging.handlers

    logger = logging.getLogger("claude_code_langfuse")
    logger.setLevel(logging.DEBUG if settings.debug else logging.INFO)
    logger.propagate = False
    try:
        ensure_state_dir(settings.state_dir)
        handler = logging.handlers.RotatingFileHandler(
            os.path.join(settings.state_dir, "langfuse_hook.log"),
            maxBytes=LOG_MAX_BYTES,
            backupCount=LOG_BACKUPS,
            encoding="utf-8",
            errors="backslashreplace",  # a lone surrogate in a logged path or key never loses the line
            delay=True,
        )
        if not stderr:
            handler.handleError = lambda record: None  # an unwritable log never reaches the hook's stderr
    except OSError:
        handler = logging.StreamHandler(sys.stderr) if stderr else logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(message)s"))
    logger.addHandler(handler)
    _LOGGER = logger
    return logger


def display_url(url: str) -> str:
    """A URL as it may appear in logs, status and sender messages: without user:password or query."""
    if "@" not in url and "?" not in url and "#" not in url:
        return url
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class LazyLog:
    """The hook's logger, but `logging` is imported only when a line is really written."""

    def __init__(self, settings: Settings, stderr: bool = True):
        self.settings, self.stderr = settings, stderr

    def debug(self, *args) -> None:
        if self.settings.debug:
            get_logger(self.settings, self.stderr).debug(*args)

    def __getattr__(self, level: str):
        return getattr(get_logger(self.settings, self.stderr), level)


def ensure_state_dir(path: str) -> None:
    if not os.path.isabs(path):  # never the working directory (for the hook: the user's project)
        raise NotADirectoryError(20, "the state folder must be an absolute path", path or "(none)")
    os.makedirs(os.path.join(path, "locks"), mode=0o700, exist_ok=True)
    for p in (path, os.path.join(path, "locks")):
        try:
            if os.stat(p).st_mode & 0o077:
                os.chmod(p, 0o700)
        except OSError:
            pass
