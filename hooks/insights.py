#!/usr/bin/env python3
"""claude-code-langfuse insights: what your Claude Code sessions did (see claude_code_langfuse/insights.py).

<python> -I /path/to/insights.py sessions --since 7d
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path[0] != HERE:
    sys.path.insert(0, HERE)

if __name__ == "__main__":
    from claude_code_langfuse.insights import main

    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
