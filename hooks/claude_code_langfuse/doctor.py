"""`doctor`: every part a trace passes through, checked, each failure with how to fix it."""

from __future__ import annotations

import json
import os
import re
import sys

from .commands import bootstrap_warning, collect_status
from .config import HOOK_VERSION, Settings, claude_dir, display_url
from .delivery import AUTH_ADVICE, NOKEYS_ADVICE, NOSDK_ADVICE, proxy_for, server_address
from .files import read_json_file
from .records import THINKING_SUMMARIES_ADVICE
from .redaction import Redactor
from .runtime import self_command

MIN_SERVER_VERSION = (4, 59, 0)


def _http_get(url: str, timeout: float, auth: tuple[str, str] | None = None) -> tuple[int | None, str]:
    import base64
    import urllib.error
    import urllib.request
    from urllib.parse import unquote, urlsplit

    req = urllib.request.Request(url, headers={"User-Agent": f"claude-code-langfuse/{HOOK_VERSION}"})
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    # The sender's way to the server (httpx's proxy rules, see delivery.proxy_for), not urllib's
    # own: they differ (ALL_PROXY, NO_PROXY patterns), and doctor must check what the sender does.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    proxy = proxy_for(url)
    if proxy:
        p = urlsplit(proxy)
        if p.scheme not in ("http", "https"):
            return (
                None,
                f"the {p.scheme} proxy {display_url(proxy)} applies (*_PROXY environment); doctor can only check through an http proxy",
            )
        req.set_proxy(p.netloc.rpartition("@")[2], p.scheme)
        if p.username or p.password:
            token = f"{unquote(p.username or '')}:{unquote(p.password or '')}".encode()
            req.add_header("Proxy-Authorization", "Basic " + base64.b64encode(token).decode())
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, resp.read(65536).decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read(65536).decode("utf-8", "replace") if e.fp else ""
    except (OSError, ValueError) as e:
        return None, str(getattr(e, "reason", e))


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def hook_registrations(settings_path: str) -> dict[str, str]:
    """Event -> our registered command ("" where the event has none)."""
    found = {"Stop": "", "SubagentStop": "", "SessionEnd": ""}
    data = read_json_file(settings_path, {})
    hooks = data.get("hooks") if isinstance(data, dict) else None
    if not isinstance(hooks, dict):
        return found
    for event in found:
        for group in hooks.get(event) or []:
            for handler in (group or {}).get("hooks") or [] if isinstance(group, dict) else []:
                command = (
                    str(handler.get("command", "")) + " " + " ".join(map(str, handler.get("args") or []))
                    if isinstance(handler, dict)
                    else ""
                )
                if "langfuse_hook" in command:
                    found[event] = command.strip()
    return found


def shadowable(command: str) -> bool:
    """`python -m langfuse_hook` (before 0.2) runs with the working directory first on sys.path:
    a project's json.py or langfuse_hook.py replaces the standard library or the hook."""
    return " -m langfuse_hook" in command


def run_doctor(settings: Settings) -> list[tuple[str, bool | None, str]]:
    """(check, ok, detail or how to fix) for every part a trace passes through."""
    checks: list[tuple[str, bool | None, str]] = []
    settings_path = os.path.join(claude_dir(), "settings.json")
    regs = hook_registrations(settings_path)
    missing = [k for k, v in regs.items() if not v]
    as_plugin = bool(os.environ.get("CLAUDE_PLUGIN_ROOT")) or os.sep + os.path.join("plugins", "") in os.path.abspath(__file__)
    if as_plugin:
        checks.append(("hook registered in Claude Code", True, "plugin install: hooks/hooks.json registers it (`claude plugin list`)"))
    else:
        checks.append(
            (
                "hook registered in Claude Code",
                not missing,
                f"{settings_path}: Stop, SubagentStop, SessionEnd"
                if not missing
                else f"{settings_path} lacks the hook for {', '.join(missing)}: run scripts/install-hook.sh",
            )
        )
    unsafe = [event for event, command in regs.items() if shadowable(command)]
    if unsafe and not as_plugin:
        checks.append(
            (
                "hook command safe from project files",
                False,
                f"{settings_path} runs the hook with `-m` for {', '.join(unsafe)}: a project's json.py or langfuse_hook.py "
                "can replace it; rerun scripts/install-hook.sh (it registers `<python> -I <path>/langfuse_hook.py`)",
            )
        )
    checks.append(("tracing enabled", settings.enabled, "on" if settings.enabled else "TRACE_TO_LANGFUSE is false in this environment"))
    if as_plugin and not settings.has_keys:
        checks.append(
            (
                "config",
                not settings.config_error,
                settings.config_error
                or "plugin install: Claude Code passes the keys to the hook (CLAUDE_PLUGIN_OPTION_*); to check them "
                "here, set CC_LANGFUSE_PUBLIC_KEY / CC_LANGFUSE_SECRET_KEY / CC_LANGFUSE_BASE_URL in this shell",
            )
        )
    else:
        source = (
            "the environment"
            if (os.environ.get("CC_LANGFUSE_PUBLIC_KEY") or os.environ.get("LANGFUSE_PUBLIC_KEY"))
            else settings.config_path
        )
        checks.append(
            (
                "config",
                not settings.config_error and settings.has_keys,
                settings.config_error or (f"keys from {source}" if settings.has_keys else NOKEYS_ADVICE),
            )
        )
    try:
        Redactor(settings.redact, settings.redact_patterns)
        checks.append(
            (
                "redaction",
                True,
                "on" + (f", {len(settings.redact_patterns)} pattern(s) of yours" if settings.redact_patterns else "")
                if settings.redact
                else "OFF (CC_LANGFUSE_REDACT=false): secrets in transcripts are sent as they are",
            )
        )
    except ValueError as e:
        checks.append(("redaction", False, f"{e}; only the built-in rules apply until it is fixed"))
    try:
        import importlib.metadata as md

        version = md.version("langfuse")
        ok = version.split(".")[0] == "5"
        checks.append(
            (
                "langfuse SDK",
                ok,
                f"langfuse {version} in {sys.executable}"
                if ok
                else f"langfuse {version} in {sys.executable}, but 5.x is required: rerun scripts/install-hook.sh",
            )
        )
    except Exception:
        checks.append(("langfuse SDK", False, NOSDK_ADVICE.format(python=sys.executable)))
    code, body = _http_get(settings.base_url + "/api/public/health", timeout=5)
    via = server_address(settings.base_url)[2]  # the proxy the sender goes through, if one applies
    server_ok = code == 200
    version_text = ""
    if server_ok:
        try:
            version_text = str(json.loads(body).get("version") or "")
        except ValueError:
            version_text = ""
    if code is None:
        checks.append(
            (
                "server reachable",
                False,
                f"{display_url(settings.base_url)}: {body}"
                + (
                    f" (through {via}: is the proxy up, and does it reach the server? or set NO_PROXY)"
                    if via
                    else ". Start it: `docker compose up -d` in the repository, or fix CC_LANGFUSE_BASE_URL"
                ),
            )
        )
    elif not server_ok:
        checks.append(
            (
                "server reachable",
                False,
                f"{display_url(settings.base_url)}/api/public/health answered {code}: the server is starting or unhealthy; `docker compose ps` and `docker compose logs langfuse-web`",
            )
        )
    else:
        new_enough = _version_tuple(version_text) >= MIN_SERVER_VERSION if version_text else False
        checks.append(
            (
                "server reachable",
                True,
                f"{display_url(settings.base_url)} (Langfuse {version_text or 'unknown version'})" + (f", through {via}" if via else ""),
            )
        )
        checks.append(
            (
                "server version >= 4.59",
                new_enough,
                f"Langfuse {version_text}"
                if new_enough
                else f"Langfuse {version_text or '(version not reported)'} is too old for SDK 5: upgrade the server images to >= 4.59 (docker-compose.yml)",
            )
        )
    if server_ok and settings.has_keys:
        code, body = _http_get(settings.base_url + "/api/public/projects", timeout=5, auth=(settings.public_key, settings.secret_key))
        checks.append(
            (
                "keys accepted",
                code == 200,
                "the project accepts the keys"
                if code == 200
                else (
                    AUTH_ADVICE.format(config=settings.config_path, url=display_url(settings.base_url))
                    if code in (401, 403)
                    else f"/api/public/projects answered {code}: {body[:200]}"
                ),
            )
        )
        if code == 200:
            from .models import doctor_check

            priced = doctor_check(settings)
            if priced is not None:
                checks.append(priced)
    st = collect_status(settings)
    if st.get("bootstrap_error"):
        checks.append(("plugin setup (first use)", False, bootstrap_warning(st["bootstrap_error"])))
    queue_ok = (
        not st["queue_corrupt_lines"] and st["queue_bytes"] <= settings.queue_warn_bytes and not (st["last_error"] and st["queue_turns"])
    )
    detail = f"{st['queue_turns']} waiting, {st['dead_letters']} dead letter(s)"
    if st["last_error"] and st["queue_turns"]:
        detail += "; last error: " + (st["last_error"].get("advice") or "")
    if st["queue_turns"] and not st["sender_running"]:
        detail += f"; send now with `{self_command()} drain`"
    checks.append(("queue healthy", queue_ok, detail))
    if st.get("thinking_omitted_sessions"):
        # not a fault of the tracer (ok None: a note, not a FAIL): Claude Code did not record the text
        sessions = st["thinking_omitted_sessions"]
        checks.append(
            (
                "thinking text in traces",
                None,
                f"empty in {len(sessions)} recent session(s) (latest {sessions[0]}): Claude Code records thinking only "
                f"with thinking summaries on; {THINKING_SUMMARIES_ADVICE}",
            )
        )
    try:
        mode = os.stat(settings.state_dir).st_mode & 0o777
        checks.append(
            (
                "private state folder",
                not mode & 0o077,
                f"{settings.state_dir} is {mode:o}"
                if not mode & 0o077
                else f"{settings.state_dir} is {mode:o}, readable by others: chmod 700 {settings.state_dir}",
            )
        )
    except OSError:
        checks.append(("private state folder", True, f"{settings.state_dir} does not exist yet; the first hook run creates it (0700)"))
    return checks


def cmd_doctor(settings: Settings) -> int:
    checks = run_doctor(settings)
    for name, ok, detail in checks:
        print(f"  {'ok  ' if ok else 'note' if ok is None else 'FAIL'}  {name:<32} {detail}")
    failed = [c for c in checks if c[1] is False]
    print(f"{len(checks) - len(failed)} of {len(checks)} checks passed" + ("" if not failed else "; fix the FAIL lines above"))
    return 1 if failed else 0
