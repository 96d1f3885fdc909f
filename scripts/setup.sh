#!/usr/bin/env bash
# Zero to traced Claude Code sessions in one command:
#   1. scripts/generate-env.sh   (only when .env does not exist yet; options are passed on)
#   2. docker compose up -d      (the six-service Langfuse v4 stack, UI on 127.0.0.1:3050)
#   3. waits until Langfuse answers /api/public/health
#   4. scripts/install-hook.sh   (private venv, config, ~/.claude/settings.json)
#
#   scripts/setup.sh                                   # asks for email, name, password
#   scripts/setup.sh --email me@x.org --name Me --password-stdin --non-interactive < pw.txt
#   SETUP_SKIP_STACK=1 CC_LANGFUSE_BASE_URL=... scripts/setup.sh   # an existing server: hook only
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf 'setup: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

ui_url="${CC_LANGFUSE_BASE_URL:-http://localhost:3050}"
if [[ "${SETUP_SKIP_STACK:-}" != "1" ]]; then
    docker compose version >/dev/null 2>&1 || die "Docker with Compose v2 is needed (docker compose version failed). Or use an existing Langfuse: SETUP_SKIP_STACK=1 CC_LANGFUSE_PUBLIC_KEY=... CC_LANGFUSE_SECRET_KEY=... CC_LANGFUSE_BASE_URL=... scripts/setup.sh"
    if [[ -f .env ]]; then
        say ".env exists: keeping its secrets (scripts/generate-env.sh --force makes new ones)"
    else
        bash scripts/generate-env.sh "$@"
    fi
    docker compose up -d
    port="$(sed -n 's/^LANGFUSE_PORT="\{0,1\}\([0-9]*\)"\{0,1\}$/\1/p' .env | tail -n 1)"
    ui_url="http://localhost:${port:-3050}"
    url="$ui_url/api/public/health"
    say "waiting for Langfuse at $url (the first start runs migrations: 2-3 minutes)"
    for _ in $(seq 1 120); do
        if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)' "$url" 2>/dev/null; then
            break
        fi
        sleep 3
    done
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)' "$url" 2>/dev/null \
        || die "Langfuse did not become healthy in 6 minutes: docker compose ps; docker compose logs langfuse-web"
fi

bash scripts/install-hook.sh
say "done. Work in Claude Code as usual; browse traces at $ui_url"
