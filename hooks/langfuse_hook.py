#!/usr/bin/env python3
"""claude-code-langfuse: every Claude Code turn as a back-dated Langfuse trace.

The one file registered as Claude Code's hook command (Stop, SubagentStop, SessionEnd). It only
puts the package beside it on sys.path and hands over; the logic is in claude_code_langfuse/
(docs/design.md has the module map). Register it by path, with -I:

    <python> -I /path/to/langfuse_hook.py            hook mode: event JSON on stdin, prints nothing, exits 0
    <python> -I /path/to/langfuse_hook.py status     queue, waiting events, dead letters, last success / error
    ... drain [--retry-dead] | doctor | backfill [--since 30d] [--project P] [--dry-run]

A script path (never `-m`) keeps the user's working directory off sys.path: a project holding a
json.py or a langfuse_hook.py cannot shadow the standard library or this file. -I also ignores
PYTHONPATH and user site-packages.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path[0] != HERE:
    sys.path.insert(0, HERE)
if __name__ == "__main__":
    if len(sys.argv) == 1:
        from claude_code_langfuse.hook import hook_main

        hook_main()
        sys.exit(0)
    from claude_code_langfuse.cli import main

    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
