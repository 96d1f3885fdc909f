#!/usr/bin/env bash
# Runs the whole test suite the way CI does: creates .venv if needed, installs the pinned
# dependencies (langfuse 5.x, pytest, check-jsonschema, pyyaml, ruff), installs the pinned Claude Code
# CLI for the end-to-end tests (they skip with a reason if it cannot be installed), then ruff
# (lint + format check) and pytest.
#
#   scripts/test.sh              # everything
#   scripts/test.sh -k delivery  # extra arguments go to pytest
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"

if [[ ! -x .venv/bin/python ]]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
# the dependencies pyproject.toml pins (runtime + test), without installing the project itself
.venv/bin/python - <<'PY' > .venv/requirements-test.txt
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["test"]))
PY
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r .venv/requirements-test.txt

if [[ -z "${CLAUDE_CLI:-}" ]]; then
    if CLAUDE_CLI="$(scripts/install-claude-cli.sh)"; then
        export CLAUDE_CLI
    else
        echo "test.sh: the Claude Code CLI could not be installed; end-to-end tests will be skipped" >&2
    fi
fi

# lint and format first: cheap, and a red lint fails CI like a red test
.venv/bin/ruff check hooks scripts tests bench
.venv/bin/ruff format --check hooks scripts tests bench

exec .venv/bin/python -m pytest "$@"
