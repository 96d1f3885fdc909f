#!/usr/bin/env bash
# Installs the pinned Claude Code CLI into a project-local prefix for the end-to-end tests and
# benchmarks, and prints the path of the `claude` executable (nothing else on stdout).
# Idempotent: a second run with the right version installed does no network access.
#
#   scripts/install-claude-cli.sh            # -> <repo>/.cache/claude-code/...
#   CLAUDE_CLI_PREFIX=/some/dir scripts/install-claude-cli.sh
set -euo pipefail

VERSION="2.1.328"
PACKAGE="@anthropic-ai/claude-code"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${CLAUDE_CLI_PREFIX:-$ROOT/.cache/claude-code}"

die() {
    echo "install-claude-cli: $*" >&2
    exit 1
}

# The wrapper package's postinstall copies the native binary from the platform package
# (e.g. @anthropic-ai/claude-code-linux-x64) over bin/claude.exe. If npm skipped install scripts,
# the platform package's binary is used directly.
working_binary() {
    local candidate
    for candidate in "$PREFIX/node_modules/.bin/claude" "$PREFIX"/node_modules/@anthropic-ai/claude-code-*/claude; do
        if [[ -x "$candidate" ]] && [[ "$("$candidate" --version 2>/dev/null || true)" == "$VERSION "* ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if binary="$(working_binary)"; then
    echo "$binary"
    exit 0
fi

command -v npm >/dev/null 2>&1 || die "npm is not installed; install Node.js and npm (e.g. apt-get install npm), or set CLAUDE_CLI to an existing claude $VERSION binary."

mkdir -p "$PREFIX"
log="$PREFIX/npm-install.log"
# Node 20 works for the native binary although the package asks for >=22, hence --engine-strict=false.
if ! npm install --prefix "$PREFIX" --no-audit --no-fund --engine-strict=false \
        "$PACKAGE@$VERSION" >"$log" 2>&1; then
    tail -n 20 "$log" >&2 || true
    die "npm install of $PACKAGE@$VERSION failed (full log: $log). Is the npm registry reachable?"
fi

if binary="$(working_binary)"; then
    echo "$binary"
    exit 0
fi
die "npm installed $PACKAGE@$VERSION but no working claude $VERSION binary was found under $PREFIX/node_modules (no native package for $(uname -sm)?). See $log."
