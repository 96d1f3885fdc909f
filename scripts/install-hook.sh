#!/usr/bin/env bash
# Installs the Claude Code -> Langfuse hook for the current user. Safe to run again.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_DIR=$(dirname -- "$SCRIPT_DIR")
HELPER="$SCRIPT_DIR/settings_merge.py"

usage() {
  cat <<'EOF'
Usage: scripts/install-hook.sh [--env-file PATH] [--python PATH]

Installs the Langfuse hook for Claude Code (Stop, SubagentStop, SessionEnd):
  ~/.claude/langfuse/venv/                   private virtualenv with the pinned langfuse SDK and genai-prices
  ~/.claude/langfuse/langfuse_hook.py        the hook's entry (what Claude Code runs)
  ~/.claude/langfuse/claude_code_langfuse/   the package it imports, byte-compiled
  ~/.claude/langfuse/insights.py             the insights report (+ a skill in ~/.claude/skills/)
  ~/.claude/langfuse/config.json             keys and server URL (mode 0600)
  ~/.claude/settings.json                    hook entries merged in (backup first):
      "<HOME>/.claude/langfuse/venv/bin/python" -I "<HOME>/.claude/langfuse/langfuse_hook.py"

Keys and server, highest priority first:
  CC_LANGFUSE_PUBLIC_KEY, CC_LANGFUSE_SECRET_KEY, CC_LANGFUSE_BASE_URL in the environment
  (for Langfuse Cloud or a team's server), else the .env written by scripts/generate-env.sh
  (LANGFUSE_INIT_PROJECT_PUBLIC_KEY / _SECRET_KEY; LANGFUSE_PORT -> http://localhost:PORT,
  default port 3050). The .env is read as data, never sourced.

Options:
  --env-file PATH   .env to read the keys from (default: <repo>/.env)
  --python PATH     Python >= 3.11 used to create the virtualenv (default: python3)
  -h, --help        this text

Running it again changes only what differs. pip is skipped when the virtualenv already
has langfuse and genai-prices satisfying the pins (fast, works offline). Undo: scripts/uninstall-hook.sh
EOF
}

die() {
  printf 'install-hook: error: %s\n' "$*" >&2
  exit 1
}

ENV_FILE="$REPO_DIR/.env"
ENV_FILE_GIVEN=""
PYTHON=""
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --env-file)
      (($# >= 2)) || die "--env-file needs a path"
      ENV_FILE=$2; ENV_FILE_GIVEN=--env-file-given; shift 2 ;;
    --env-file=*) ENV_FILE=${1#*=}; ENV_FILE_GIVEN=--env-file-given; shift ;;
    --python)
      (($# >= 2)) || die "--python needs a path"
      PYTHON=$2; shift 2 ;;
    --python=*) PYTHON=${1#*=}; shift ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

[[ -n "${HOME:-}" && -d "$HOME" ]] || die "HOME is not set or is not a directory"

if [[ -z "$PYTHON" ]]; then
  PYTHON=$(command -v python3) || die "python3 not found. Install Python 3.11 or newer, or pass --python PATH."
fi
PY_VERSION=$("$PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' </dev/null 2>/dev/null) ||
  die "cannot run '$PYTHON'. Pass a working Python 3.11+ with --python PATH."
IFS=. read -r PY_MAJOR PY_MINOR _ <<<"$PY_VERSION"
if ! [[ "$PY_MAJOR" =~ ^[0-9]+$ && "$PY_MINOR" =~ ^[0-9]+$ ]] || ((PY_MAJOR < 3 || (PY_MAJOR == 3 && PY_MINOR < 11))); then
  die "Python 3.11 or newer is required (the langfuse 5 SDK needs it); '$PYTHON' is $PY_VERSION. Install a newer Python and pass it with --python PATH."
fi

# Everything that can be refused (keys, settings.json, config.json) is checked before
# anything is created, so a refusal leaves the machine as it was.
"$PYTHON" "$HELPER" preflight --home "$HOME" --repo "$REPO_DIR" --env-file "$ENV_FILE" ${ENV_FILE_GIVEN:+"$ENV_FILE_GIVEN"} </dev/null ||
  exit 1

# every runtime requirement (langfuse; genai-prices for `models sync` and insights' local cost), one per line
PIN_LINES=$("$PYTHON" "$HELPER" pin --pyproject "$REPO_DIR/pyproject.toml" </dev/null) || exit 1
PINS=()
while IFS= read -r line; do [[ -n "$line" ]] && PINS+=("$line"); done <<<"$PIN_LINES" # bash 3.2 (macOS) has no mapfile
PIN="${PINS[*]}"

LF_DIR="$HOME/.claude/langfuse"
VENV="$LF_DIR/venv"
VENV_PY="$VENV/bin/python"

if [[ -x "$VENV_PY" ]] && "$VENV_PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' </dev/null 2>/dev/null; then
  echo "Using the existing virtualenv $VENV"
else
  if [[ -e "$VENV" ]]; then
    # Typically the Python it was made from was upgraded or removed: the venv can't run.
    echo "The virtualenv $VENV does not work any more; recreating it"
    rm -rf -- "$VENV"
  fi
  "$PYTHON" -c 'import venv, ensurepip' </dev/null 2>/dev/null ||
    die "'$PYTHON' ($PY_VERSION) cannot create virtual environments: its venv/ensurepip module is missing. On Debian/Ubuntu install the package python3-venv (sudo apt install python3-venv, or python$PY_MAJOR.$PY_MINOR-venv), then run this again."
  [[ -d "$HOME/.claude" ]] || mkdir -m 700 -- "$HOME/.claude"
  [[ -d "$LF_DIR" ]] || mkdir -m 700 -- "$LF_DIR"
  echo "Creating the virtualenv $VENV (Python $PY_VERSION)"
  if ! "$PYTHON" -m venv -- "$VENV" </dev/null; then
    rm -rf -- "$VENV"
    die "'$PYTHON' -m venv failed (see above). On Debian/Ubuntu install python3-venv (or python$PY_MAJOR.$PY_MINOR-venv) and run this again."
  fi
fi

if LF_VERSION=$("$VENV_PY" "$HELPER" satisfies "${PINS[@]}" </dev/null 2>/dev/null); then
  echo "$LF_VERSION already satisfy $PIN; pip not needed"
else
  echo "Installing $PIN into the virtualenv (takes a few seconds)"
  "$VENV_PY" -m pip install --disable-pip-version-check --no-input --quiet "${PINS[@]}" </dev/null ||
    die "pip could not install $PIN into $VENV (see pip's message above). Check the network or proxy (pip honours PIP_INDEX_URL, PIP_FIND_LINKS) and run this again. ~/.claude/settings.json was not changed."
  LF_VERSION=$("$VENV_PY" "$HELPER" satisfies "${PINS[@]}" </dev/null) ||
    die "after pip, $VENV still does not satisfy $PIN or does not import: $LF_VERSION"
  echo "Installed $LF_VERSION"
fi

# Registered last: the hook only goes live once its interpreter and SDK work.
"$PYTHON" "$HELPER" apply --home "$HOME" --repo "$REPO_DIR" --env-file "$ENV_FILE" ${ENV_FILE_GIVEN:+"$ENV_FILE_GIVEN"} </dev/null ||
  exit 1

# Only reports; an unreachable server must not undo a good install.
"$PYTHON" "$HELPER" check --home "$HOME" </dev/null || true
