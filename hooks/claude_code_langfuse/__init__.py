"""claude-code-langfuse: every Claude Code turn as a back-dated Langfuse trace.

Modules in the order data flows (docs/design.md draws the map):
  hook side (Claude Code waits for these; standard library only, constant work):
    config -> event -> files -> inbox -> runtime -> hook
  worker side (a detached process):
    transcript -> turns -> forks -> subagents -> records -> redaction -> store -> collect
    -> delivery -> sender (the only module that imports the langfuse SDK) ; worker drives them
  commands: commands (status, drain), backfill, doctor, insights, cli
"""

import os as _os
import sys as _sys

_here = _os.path.dirname(_os.path.abspath(__file__))
if not _os.access(_here, _os.W_OK) and not _os.path.isdir(_os.path.join(_here, "__pycache__")):
    # A read-only install without compiled bytecode (the plugin cache): keep it in our data folder
    # instead, or every event would compile the package from source (the worker fills it even
    # under PYTHONDONTWRITEBYTECODE: runtime.cache_bytecode). Set here, before any module of the
    # package is imported (this file itself is a few lines). A read-only install that was
    # compiled (the installer's, made read-only) keeps using its own __pycache__.
    _data = _os.environ.get("CLAUDE_PLUGIN_DATA") or _os.path.join(_os.path.expanduser("~"), ".cache", "claude-code-langfuse")
    try:
        if not _os.path.isabs(_data):
            raise NotADirectoryError(_data)  # no HOME: never bytecode relative to the working directory
        # made here: Python's own mkdir of a missing prefix right below "/" (HOME="" is "/") is
        # relative to the working directory, which is the user's project
        _os.makedirs(_os.path.join(_data, "pycache"), mode=0o700, exist_ok=True)
        _sys.pycache_prefix = _os.path.join(_data, "pycache")
    except OSError:
        _sys.dont_write_bytecode = True
