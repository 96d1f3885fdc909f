"""Settings (environment first, then the config file) and the log. Imported by the hook: keep it light."""

from __future__ import annotations

import collections
import json
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


def _home() -> str:
    return os.path.expanduser("~")


def claude_dir() -> str:
    return os.environ.get("CLAUDE_CONFIG_DIR") or os.path.join(_home(), ".claude")


def default_config_path() -> str:
    return os.environ.get("CC_LANGFUSE_CONFIG") or os.path.join(_home(), ".claude", "langfuse", "config.json")


def default_state_dir() -> str:
    return os.environ.get("CC_LANGFUSE_STATE_DIR") or os.path.join(_home(), ".claude", "state")


# Small records are NamedTuples and plain classes, not dataclasses: `import dataclasses` pulls in
# `inspect` and costs the hook more start-up time than everything else it imports.


# collections.namedtuple, not typing.NamedTuple: `typing` alone costs the hook ~4 ms per event.
_SettingsBase = collections.namedtuple(
    "_SettingsBase",
    [
        "enabled",
        "public_key",
        "secret_key",
        "base_url",
        "debug",
        "user_id",
        "max_field_chars",
        "redact",
        "redact_patterns",
        "timeout",
        "queue_warn_bytes",
        "state_dir",
        "config_path",
        "config_error",
    ],
    defaults=(
        True,
        "",
        "",
        DEFAULT_BASE_URL,
        False,
        "",
        DEFAULT_MAX_FIELD_CHARS,
        True,
        (),
        10.0,
        DEFAULT_QUEUE_WARN_BYTES,
        "",
        "",
        "",
    ),
)


class Settings(_SettingsBase):
    """Every setting, resolved (see docs/design.md, "Configuration")."""

    __slots__ = ()

    @property
    def has_keys(self) -> bool:
        return bool(self.public_key and self.secret_key)


def _read_config_file(path: str) -> tuple[dict, str]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}, ""
    except (OSError, ValueError) as e:
        return {}, f"cannot read config file {path}: {e}"
    if not isinstance(data, dict):
        return {}, f"config file {path} must hold a JSON object"
    return data, ""


def load_settings(environ: dict | None = None) -> Settings:
    env = os.environ if environ is None else environ
    config_path = env.get("CC_LANGFUSE_CONFIG") or default_config_path()
    conf, error = _read_config_file(config_path)

    def get(*names: str) -> str | None:
        # by name first: a CC_LANGFUSE_* key in the config file beats a LANGFUSE_* variable that
        # the user exported for their own applications
        for name in names:
            for source in (env, conf):
                value = source.get(name)
                if value not in (None, ""):
                    return value if isinstance(value, str) else json.dumps(value) if not isinstance(value, (int, float)) else str(value)
        return None

    problems = [error] if error else []

    def number(name: str, default: float, cast=float) -> float:
        raw = get(name)
        try:
            return cast(raw) if raw is not None else default
        except ValueError:
            problems.append(f"{name}={raw!r} is not a number; using {default:g}")
            return default

    patterns_raw = env.get("CC_LANGFUSE_REDACT_PATTERNS")
    if patterns_raw:
        patterns = [p for p in patterns_raw.splitlines() if p.strip()]
    else:
        conf_patterns = conf.get("CC_LANGFUSE_REDACT_PATTERNS") or []
        patterns = [conf_patterns] if isinstance(conf_patterns, str) else [p for p in conf_patterns if isinstance(p, str)]
    user_id = get("CC_LANGFUSE_USER_ID") or ""
    if not user_id:
        user_id = env.get("USER") or env.get("LOGNAME") or ""
        if not user_id:
            try:
                import pwd

                user_id = pwd.getpwuid(os.getuid()).pw_name
            except (ImportError, KeyError):
                user_id = "unknown"
    return Settings(
        enabled=(get("TRACE_TO_LANGFUSE") or "true").strip().lower() not in FALSE_WORDS,
        public_key=get("CC_LANGFUSE_PUBLIC_KEY", "CLAUDE_PLUGIN_OPTION_PUBLIC_KEY", "LANGFUSE_PUBLIC_KEY") or "",
        secret_key=get("CC_LANGFUSE_SECRET_KEY", "CLAUDE_PLUGIN_OPTION_SECRET_KEY", "LANGFUSE_SECRET_KEY") or "",
        base_url=(
            get("CC_LANGFUSE_BASE_URL", "CLAUDE_PLUGIN_OPTION_BASE_URL", "LANGFUSE_BASE_URL", "LANGFUSE_HOST") or DEFAULT_BASE_URL
        ).rstrip("/"),
        debug=(get("CC_LANGFUSE_DEBUG") or "false").strip().lower() not in FALSE_WORDS,
        user_id=user_id,
        max_field_chars=max(1000, int(number("CC_LANGFUSE_MAX_FIELD_CHARS", DEFAULT_MAX_FIELD_CHARS, int))),
        redact=(get("CC_LANGFUSE_REDACT") or "true").strip().lower() not in FALSE_WORDS,
        redact_patterns=patterns,
        timeout=max(0.5, number("CC_LANGFUSE_TIMEOUT", 10.0)),
        queue_warn_bytes=int(number("CC_LANGFUSE_QUEUE_WARN_MB", DEFAULT_QUEUE_WARN_BYTES / 1048576) * 1048576),
        state_dir=os.path.expanduser(get("CC_LANGFUSE_STATE_DIR") or default_state_dir()),
        config_path=config_path,
        config_error="; ".join(problems),
    )


# ============================================================================ log

_LOGGER = None


def get_logger(settings: Settings):
    """A size-rotated file log in the state folder; never stdout (Claude Code reads it)."""
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
    except OSError:
        handler = logging.StreamHandler(sys.stderr)
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

    def __init__(self, settings: Settings):
        self.settings = settings

    def debug(self, *args) -> None:
        if self.settings.debug:
            get_logger(self.settings).debug(*args)

    def __getattr__(self, level: str):
        return getattr(get_logger(self.settings), level)


def ensure_state_dir(path: str) -> None:
    os.makedirs(os.path.join(path, "locks"), mode=0o700, exist_ok=True)
    for p in (path, os.path.join(path, "locks")):
        try:
            if os.stat(p).st_mode & 0o077:
                os.chmod(p, 0o700)
        except OSError:
            pass
