"""The command line: `langfuse_hook.py [status|drain|doctor|backfill|models sync]`; no command = hook mode."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """The subcommands; hook mode (no arguments) is the entry file's, which calls hook.hook_main directly."""
    return cli_main(sys.argv[1:] if argv is None else argv)


def cli_main(argv: list[str]) -> int:
    import argparse

    from .backfill import cmd_backfill
    from .commands import cmd_drain, cmd_status
    from .config import load_settings
    from .doctor import cmd_doctor
    from .worker import bootstrap_main, worker_main

    parser = argparse.ArgumentParser(
        prog="langfuse_hook.py",
        description="claude-code-langfuse: Claude Code turns as Langfuse traces. "
        "Without a command it runs as the Claude Code hook (event JSON on stdin).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{status,drain,doctor,backfill,models,mute,unmute,slash,purge}")
    p = sub.add_parser("status", help="queue, hook events waiting, dead letters, last success and error, worker")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("drain", help="send the queue now, in the foreground")
    p.add_argument("--retry-dead", action="store_true", help="first move dead letters back into the queue")
    sub.add_parser("doctor", help="check settings, SDK, server, keys and queue; say how to fix what fails")
    p = sub.add_parser("backfill", help="queue sessions from before the hook was installed (same ids as the live hook)")
    p.add_argument("--since", default="30d", help="only sessions changed within this window: 30d, 12h, 2w or a date (default 30d)")
    p.add_argument("--project", help="only this project (folder name of the git top level / cwd)")
    p.add_argument("--dry-run", action="store_true", help="print what would be sent; queue and send nothing")
    p = sub.add_parser("models", help="model prices in Langfuse: `models sync` creates the definitions the server lacks")
    models_sub = p.add_subparsers(dest="models_command", required=True, metavar="{sync}")
    p = models_sub.add_parser(
        "sync", help="create model definitions (prices from genai-prices) for models seen in recent transcripts and the queue"
    )
    p.add_argument("--dry-run", action="store_true", help="print the definitions that would be created; send nothing")
    p.add_argument("--model", action="append", default=[], metavar="NAME", help="also this model name (repeatable)")
    p.add_argument("--since", default="30d", help="transcripts changed within this window: 30d, 12h, 2w or a date (default 30d)")
    p = sub.add_parser("mute", help="stop tracing one session (its later turns are never sent); no setting changes")
    p.add_argument("session_id", nargs="?", help="the session id (Claude Code's /status shows it)")
    p.add_argument(
        "--current",
        action="store_true",
        help="the session this command runs in (CLAUDE_CODE_SESSION_ID), else the newest one traced in this folder",
    )
    p = sub.add_parser("unmute", help="trace a muted session's later turns again")
    p.add_argument("session_id", nargs="?")
    p.add_argument("--current", action="store_true")
    p = sub.add_parser("slash", help="what the /langfuse command shows in Claude Code: status of this session, or mute/unmute it")
    p.add_argument("action", nargs="?", default="status", help="status (default), mute or unmute")
    p = sub.add_parser("purge", help="delete one session's traces from Langfuse, drop its queued records and mute it")
    p.add_argument("--session", required=True, metavar="ID", help="the session id")
    p = sub.add_parser("worker")  # internal: the detached worker (not listed in --help)
    p.add_argument("--takeover", action="store_true")  # started by a hook whose keys differ from the running worker's
    sub.add_parser("send")  # internal: the name of the worker before 0.2 (a sender already running during an upgrade)
    p = sub.add_parser("bootstrap")  # internal: builds the plugin's venv, then runs the worker
    p.add_argument("--takeover", action="store_true")  # accepted, as for worker: the venv's worker starts fresh anyway
    p.add_argument("--now", action="store_true")  # by hand, after fixing what `status` reported: ignore the back-off
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.command == "status":
        return cmd_status(settings, args.json)
    if args.command == "drain":
        return cmd_drain(settings, args.retry_dead)
    if args.command == "doctor":
        return cmd_doctor(settings)
    if args.command == "backfill":
        return cmd_backfill(settings, args.since, args.project, args.dry_run)
    if args.command == "models":
        from .models import cmd_models_sync

        return cmd_models_sync(settings, args.dry_run, args.model, args.since)
    if args.command in ("mute", "unmute"):
        from .mute import cmd_mute

        return cmd_mute(settings, args.session_id, args.current, mute=args.command == "mute")
    if args.command == "slash":
        from .commands import cmd_slash

        return cmd_slash(settings, args.action)
    if args.command == "purge":
        from .mute import cmd_purge

        return cmd_purge(settings, args.session)
    if args.command in ("worker", "send"):
        return worker_main(settings, takeover=getattr(args, "takeover", False))
    if args.command == "bootstrap":
        return bootstrap_main(settings, now=getattr(args, "now", False))
    return 2
