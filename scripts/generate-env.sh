#!/usr/bin/env bash
# Writes the .env that docker-compose.yml reads: fresh random secrets plus the first
# Langfuse user, org, project and project API keys. The file is private (0600) from the
# moment it exists, an existing one is only replaced with --force (after a 0600 backup),
# and no secret is ever printed.
set -euo pipefail

# Everything this script creates (temp file, .env, backup) is owner-only from birth.
umask 077

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
PROG="$(basename "$0")"

usage() {
    cat <<EOF
Usage: $PROG [options]

Writes .env for the self-hosted Langfuse stack (docker-compose.yml) with random secrets
and the first user's login. Default output: the .env next to docker-compose.yml.

First user (prompted for on a terminal when missing):
  --email EMAIL            login email of the first user (required)
  --name NAME              display name (default: the part of the email before @)
  --password PASSWORD      password, at least 8 characters (visible in 'ps': prefer
                           the prompt or --password-stdin)
  --password-stdin         read the password from the first line of standard input

Organisation and project:
  --org-name NAME          organisation name (default: Claude Code)
  --project-name NAME      project name (default: claude-code)

Network:
  --bind-address ADDR      host address the UI and MinIO are published on
                           (default: 127.0.0.1, this machine only)
  --hostname HOST          host name browsers use to reach the UI (default: localhost)
  --port PORT              host port of the UI (default: 3050)

File:
  --output PATH            where to write (default: $(display_path "$REPO_DIR/.env"))
  --force                  replace an existing file, keeping a 0600 backup PATH.bak.<time>
  --non-interactive        never prompt; missing required values are an error
  -h, --help               show this help
EOF
}

# Shown paths are relative to the working directory when that is shorter.
display_path() {
    local p="$1"
    case "$p" in
        "$PWD"/*) printf '%s' "${p#"$PWD"/}" ;;
        *) printf '%s' "$p" ;;
    esac
}

die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

# n random bytes as 2n lowercase hex characters, from the OS CSPRNG.
rand_hex() {
    local n="$1" out
    if command -v openssl >/dev/null 2>&1; then
        out="$(openssl rand -hex "$n")"
    elif command -v python3 >/dev/null 2>&1; then
        out="$(python3 -c 'import secrets, sys; print(secrets.token_hex(int(sys.argv[1])))' "$n")"
    else
        out="$(od -An -tx1 -N "$n" /dev/urandom | tr -d ' \n')"
    fi
    [[ "$out" =~ ^[0-9a-f]+$ && ${#out} -eq $((2 * n)) ]] \
        || die "could not generate random bytes (need openssl, python3 or /dev/urandom)"
    printf '%s' "$out"
}

# Compose (v2) .env value: double quotes, where the parser turns \\ into \, \" into "
# and $$ into $. Nothing else is special inside, so every other character, #, ', |, &,
# spaces and all, comes back verbatim. Line breaks cannot be represented: rejected earlier.
env_quote() {
    local v="$1"
    v="${v//\\/\\\\}"
    v="${v//\"/\\\"}"
    v="${v//\$/\$\$}"
    printf '"%s"' "$v"
}

# Rejects what a one-line .env value cannot carry (and what nobody means to type).
check_text() {
    local what="$1" value="$2"
    if [[ "$value" =~ [[:cntrl:]] ]]; then
        die "$what contains a line break or another control character; use printable characters only"
    fi
}

email=""
name=""
password=""
password_set=0
password_stdin=0
org_name="Claude Code"
project_name="claude-code"
bind_address="127.0.0.1"
public_host="localhost"
port="3050"
output="$REPO_DIR/.env"
force=0
interactive=1

need_arg() {
    [[ $# -ge 2 ]] || die "$1 needs a value (see --help)"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --email) need_arg "$@"; email="$2"; shift 2 ;;
        --email=*) email="${1#*=}"; shift ;;
        --name) need_arg "$@"; name="$2"; shift 2 ;;
        --name=*) name="${1#*=}"; shift ;;
        --password) need_arg "$@"; password="$2"; password_set=1; shift 2 ;;
        --password=*) password="${1#*=}"; password_set=1; shift ;;
        --password-stdin) password_stdin=1; shift ;;
        --org-name) need_arg "$@"; org_name="$2"; shift 2 ;;
        --org-name=*) org_name="${1#*=}"; shift ;;
        --project-name) need_arg "$@"; project_name="$2"; shift 2 ;;
        --project-name=*) project_name="${1#*=}"; shift ;;
        --bind-address) need_arg "$@"; bind_address="$2"; shift 2 ;;
        --bind-address=*) bind_address="${1#*=}"; shift ;;
        --hostname) need_arg "$@"; public_host="$2"; shift 2 ;;
        --hostname=*) public_host="${1#*=}"; shift ;;
        --port) need_arg "$@"; port="$2"; shift 2 ;;
        --port=*) port="${1#*=}"; shift ;;
        --output) need_arg "$@"; output="$2"; shift 2 ;;
        --output=*) output="${1#*=}"; shift ;;
        --force) force=1; shift ;;
        --non-interactive) interactive=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
done

if [[ $password_stdin -eq 1 && $password_set -eq 1 ]]; then
    die "use either --password or --password-stdin, not both"
fi

# Prompts need a terminal on both ends; otherwise behave as --non-interactive.
if [[ $interactive -eq 1 ]] && { [[ ! -t 0 && $password_stdin -eq 0 ]] || [[ ! -t 2 ]]; }; then
    interactive=0
fi
# --password-stdin consumes stdin; prompts then read the terminal directly.
tty_in=/dev/stdin
if [[ $password_stdin -eq 1 ]]; then
    tty_in=/dev/tty
    if [[ $interactive -eq 1 ]] && ! { : </dev/tty; } 2>/dev/null; then
        interactive=0
    fi
fi

if [[ $password_stdin -eq 1 ]]; then
    IFS= read -r password || [[ -n "$password" ]] || die "--password-stdin: nothing to read on standard input"
    password="${password%$'\r'}"
    password_set=1
fi

# Fail before prompting when the file would be refused anyway.
output_dir="$(dirname -- "$output")"
[[ -d "$output_dir" ]] || die "folder $output_dir does not exist"
[[ ! -d "$output" ]] || die "$output is a folder; give --output the path of a file"
if [[ -e "$output" || -L "$output" ]] && [[ $force -eq 0 ]]; then
    die "$(display_path "$output") already exists; it was left unchanged. Re-run with --force to replace it (a backup is kept), or --output PATH to write elsewhere."
fi

prompt() {
    local label="$1" default="${2:-}" reply
    if [[ -n "$default" ]]; then
        printf '%s [%s]: ' "$label" "$default" >&2
    else
        printf '%s: ' "$label" >&2
    fi
    IFS= read -r reply <"$tty_in" || die "no answer for $label"
    printf '%s' "${reply:-$default}"
}

if [[ -z "$email" && $interactive -eq 1 ]]; then
    email="$(prompt "Email of the first Langfuse user")"
fi
if [[ -z "$name" && $interactive -eq 1 ]]; then
    name="$(prompt "Display name" "${email%%@*}")"
fi
if [[ $password_set -eq 0 && $interactive -eq 1 ]]; then
    while :; do
        # read -s turns echo off before -p shows the prompt: type-ahead stays hidden too
        IFS= read -r -s -p 'Password (at least 8 characters, not shown): ' password <"$tty_in" \
            || die "no password entered"
        printf '\n' >&2
        IFS= read -r -s -p 'Repeat the password: ' password2 <"$tty_in" || die "no password entered"
        printf '\n' >&2
        if [[ "$password" != "$password2" ]]; then
            printf 'The passwords differ; try again.\n' >&2
        elif [[ ${#password} -lt 8 ]]; then
            printf 'Too short; use at least 8 characters.\n' >&2
        else
            break
        fi
    done
    password_set=1
fi

missing=()
[[ -n "$email" ]] || missing+=("--email")
[[ $password_set -eq 1 ]] || missing+=("--password-stdin (or --password)")
if [[ ${#missing[@]} -gt 0 ]]; then
    die "missing ${missing[*]}: no terminal to ask on (or --non-interactive). Example: printf '%s\\n' \"\$PW\" | $PROG --email you@example.com --password-stdin"
fi
[[ -n "$name" ]] || name="${email%%@*}"

check_text "the email" "$email"
check_text "the name" "$name"
check_text "the password" "$password"
check_text "the organisation name" "$org_name"
check_text "the project name" "$project_name"
[[ "$email" == ?*@?* ]] || die "the email '$email' does not look like an email address"
[[ ${#password} -ge 8 ]] || die "the password is shorter than 8 characters"
[[ -n "$org_name" ]] || die "the organisation name is empty"
[[ -n "$project_name" ]] || die "the project name is empty"
if ! [[ "$port" =~ ^[0-9]{1,5}$ ]] || (( 10#$port < 1 || 10#$port > 65535 )); then
    die "--port must be a number from 1 to 65535"
fi
# Compose's short port syntax needs IPv6 addresses in brackets.
[[ "$bind_address" =~ ^([0-9.]+|\[[0-9A-Fa-f:.]+\])$ ]] \
    || die "--bind-address must be an IP address such as 127.0.0.1, 0.0.0.0 or [::1]"
[[ "$public_host" =~ ^[A-Za-z0-9.:_-]+$ ]] || die "--hostname must be a plain host name or IP address"

# Database, cache and storage passwords end up inside URLs (DATABASE_URL), so they are hex.
postgres_password="$(rand_hex 24)"
clickhouse_password="$(rand_hex 24)"
redis_password="$(rand_hex 24)"
minio_password="$(rand_hex 24)"
salt="$(rand_hex 32)"
encryption_key="$(rand_hex 32)"
nextauth_secret="$(rand_hex 32)"
public_key="pk-lf-$(rand_hex 16)"
secret_key="sk-lf-$(rand_hex 24)"

tmp="$(mktemp "$output_dir/.env.tmp.XXXXXX")"
cleanup() { rm -f -- "$tmp"; }
trap cleanup EXIT
chmod 600 "$tmp"

{
    printf '# Written by scripts/generate-env.sh on %s. Private: keep it 0600, never commit it.\n' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf '# Variables are described in .env.example. Values are in Compose .env syntax:\n'
    printf '# inside double quotes, \\\\ stands for \\, \\" for " and $$ for $.\n\n'
    printf '# Network\n'
    printf 'LANGFUSE_BIND_ADDRESS=%s\n' "$(env_quote "$bind_address")"
    printf 'LANGFUSE_HOSTNAME=%s\n' "$(env_quote "$public_host")"
    printf 'LANGFUSE_PORT=%s\n' "$(env_quote "$port")"
    printf 'MINIO_PORT="9090"\n\n'
    printf '# Langfuse secrets\n'
    printf 'SALT=%s\n' "$(env_quote "$salt")"
    printf 'ENCRYPTION_KEY=%s\n' "$(env_quote "$encryption_key")"
    printf 'NEXTAUTH_SECRET=%s\n\n' "$(env_quote "$nextauth_secret")"
    printf '# Backing services\n'
    printf 'POSTGRES_PASSWORD=%s\n' "$(env_quote "$postgres_password")"
    printf 'CLICKHOUSE_PASSWORD=%s\n' "$(env_quote "$clickhouse_password")"
    printf 'REDIS_PASSWORD=%s\n' "$(env_quote "$redis_password")"
    printf 'MINIO_ROOT_USER="minio"\n'
    printf 'MINIO_ROOT_PASSWORD=%s\n\n' "$(env_quote "$minio_password")"
    printf '# First organisation, project, API keys and user (created on first start)\n'
    printf 'LANGFUSE_INIT_ORG_ID="claude-code-org"\n'
    printf 'LANGFUSE_INIT_ORG_NAME=%s\n' "$(env_quote "$org_name")"
    printf 'LANGFUSE_INIT_PROJECT_ID="claude-code"\n'
    printf 'LANGFUSE_INIT_PROJECT_NAME=%s\n' "$(env_quote "$project_name")"
    printf 'LANGFUSE_INIT_PROJECT_PUBLIC_KEY=%s\n' "$(env_quote "$public_key")"
    printf 'LANGFUSE_INIT_PROJECT_SECRET_KEY=%s\n' "$(env_quote "$secret_key")"
    printf 'LANGFUSE_INIT_USER_EMAIL=%s\n' "$(env_quote "$email")"
    printf 'LANGFUSE_INIT_USER_NAME=%s\n' "$(env_quote "$name")"
    printf 'LANGFUSE_INIT_USER_PASSWORD=%s\n' "$(env_quote "$password")"
} >"$tmp"

backup=""
if [[ -e "$output" || -L "$output" ]]; then
    stamp="$(date +%Y%m%d-%H%M%S)"
    backup="$output.bak.$stamp"
    i=1
    while [[ -e "$backup" || -L "$backup" ]]; do
        backup="$output.bak.$stamp.$i"
        i=$((i + 1))
    done
    # A copy (not a rename) made under umask 077, so the backup is 0600 even when the
    # old file was more open; chmod covers a umask-ignoring filesystem.
    cp -- "$output" "$backup"
    chmod 600 "$backup"
fi
mv -f -- "$tmp" "$output"
trap - EXIT

shown="$(display_path "$output")"
printf 'Wrote %s (mode 600):\n' "$shown"
printf '  random secrets: SALT, ENCRYPTION_KEY, NEXTAUTH_SECRET, POSTGRES_PASSWORD,\n'
printf '                  CLICKHOUSE_PASSWORD, REDIS_PASSWORD, MINIO_ROOT_PASSWORD\n'
printf '  project API keys: LANGFUSE_INIT_PROJECT_PUBLIC_KEY, LANGFUSE_INIT_PROJECT_SECRET_KEY\n'
printf '  first user: %s (password as entered)\n' "$email"
printf '  organisation / project: %s / %s\n' "$org_name" "$project_name"
printf '  UI: http://%s:%s (published on %s)\n' "$public_host" "$port" "$bind_address"
if [[ -n "$backup" ]]; then
    printf 'The previous file was kept as %s (mode 600).\n' "$(display_path "$backup")"
    printf 'Note: the databases keep the passwords they were created with; new secrets only\n'
    printf 'take effect on fresh volumes (docker compose down -v deletes all data).\n'
fi
printf '\nNext: docker compose up -d   (first start takes 2-3 minutes; check with docker compose ps)\n'
printf 'Then log in at http://%s:%s as %s.\n' "$public_host" "$port" "$email"
