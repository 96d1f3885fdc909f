#!/usr/bin/env bash
# Removes what install-hook.sh added. Safe to run again.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
HELPER="$SCRIPT_DIR/settings_merge.py"

usage() {
  cat <<'EOF'
Usage: scripts/uninstall-hook.sh [--purge] [--python PATH]

Removes the Langfuse hook installed by scripts/install-hook.sh:
  - our entries in ~/.claude/settings.json (found by the hook's path; other hooks and keys
    stay as they are; a timestamped backup is made first). If nothing else changed in the
    file since the install, its original content is put back byte for byte; if the
    installer had created the file, it is removed again.
  - ~/.claude/langfuse/ (hook entry, its claude_code_langfuse/ package, insights.py, config
    with the keys, virtualenv) and the insights skill in ~/.claude/skills/langfuse-insights/.
The queue, state and log in ~/.claude/state/ are kept (traces not yet sent are sent after a
reinstall) unless --purge is given.

Options:
  --purge         also delete the hook's files in ~/.claude/state/ (queued traces included):
                  langfuse_state.json, pending_traces.jsonl, dead_traces.jsonl,
                  langfuse_hook.log*, langfuse_sender.json, inbox/, locks/
  --python PATH   Python 3.8+ to run the uninstaller with (default: python3)
  -h, --help      this text
EOF
}

die() {
  printf 'uninstall-hook: error: %s\n' "$*" >&2
  exit 1
}

PURGE=""
PYTHON=""
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --purge) PURGE=--purge; shift ;;
    --python)
      (($# >= 2)) || die "--python needs a path"
      PYTHON=$2; shift 2 ;;
    --python=*) PYTHON=${1#*=}; shift ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

[[ -n "${HOME:-}" && -d "$HOME" ]] || die "HOME is not set or is not a directory"

if [[ -z "$PYTHON" ]]; then
  if ! PYTHON=$(command -v python3); then
    # The hook's own interpreter works too; removing its venv while it runs is fine on POSIX.
    PYTHON="$HOME/.claude/langfuse/venv/bin/python"
    [[ -x "$PYTHON" ]] || die "python3 not found. Install Python 3 or pass --python PATH."
  fi
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 8))' </dev/null 2>/dev/null ||
  die "'$PYTHON' is not a working Python 3.8 or newer; pass one with --python PATH."

"$PYTHON" "$HELPER" uninstall --home "$HOME" ${PURGE:+"$PURGE"} </dev/null || exit 1
