"""Secret redaction, field truncation and image placeholders.

Every secret below is a made-up value of the real format (right prefix, length, alphabet); the
tests check that the secret text itself is gone, the kind is named, and the text around it
(key names, URL user/host, header names) is still there for a reader of the trace.
"""

import base64
import copy
import functools
import hashlib
import json
import random

import pytest
from claude_code_langfuse.redaction import Redactor, is_secret_name, redact_text, redact_value, truncate_field, truncate_json_value
from claude_code_langfuse.turns import image_placeholder
from samples import SAMPLES as TRANSCRIPTS  # noqa: E402

AWS_ID = "AKIAZ3MHQ7W2EXAMPL3X"
AWS_SESSION_ID = "ASIAY4NR8P2QK6VJTW5D"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYz8Kq4Lm2Tz"
ANTHROPIC = "sk-ant-api03-Xq3vR8mK2pL9wN4tY7uB1cF6hJ0dS5gA-zE8iO3rT6yU9pQ2wM_5nV7bC4xK1jH8lG0fD3sA6-qW9eR2tY5uI8oAA"
OPENAI_OLD = "sk-9fKq3LmN8pR2tV6xZ1bD4gH7jW0yC5eA3sU8iO2kM6nB9vX1"
OPENAI_PROJ = "sk-proj-Tz8Kq4Lm2Nv6Xb1Rc9Wd3Fh7Jp5Sg0Ay8Ue2Io4Pk6Mn1Bv3Cx5Zq7Lw9Er2Ty4Ui6Op8As0Df"
LANGFUSE_SECRET = "sk-lf-7c9e2a41-3b5d-4f68-9a0e-1d2c3b4a5f60"
LANGFUSE_PUBLIC = "pk-lf-0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
GITHUB_TOKENS = {
    "ghp": "ghp_R8mK2pL9wN4tY7uB1cF6hJ0dS5gAzE8iO3rT",
    "gho": "gho_16C7e42F292c6912E7710c838347Ae178B4a",
    "ghu": "ghu_Xq3vR8mK2pL9wN4tY7uB1cF6hJ0dS5gAzE8i",
    "ghs": "ghs_Tz8Kq4Lm2Nv6Xb1Rc9Wd3Fh7Jp5Sg0Ay8Ue2",
    "ghr": "ghr_Pk6Mn1Bv3Cx5Zq7Lw9Er2Ty4Ui6Op8As0DfG",
    "pat": "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4",
}
SLACK_BOT = "xoxb-2468013579-1357924680123-Xq3vR8mK2pL9wN4tY7uB1cF6"
SLACK_USER = "xoxp-2468013579-1357924680-1122334455667-9fKq3LmN8pR2tV6xZ1bD4gH7jW0yC5eA"
SLACK_APP = "xapp-1-A0123456789-1234567890123-9fKq3LmN8pR2tV6xZ1bD4gH7jW0yC5eA3sU8iO2"
SLACK_LEGACY = "xoxa-2-9fKq3LmN8pR2tV6xZ1bD4gH7"
SLACK_WEBHOOK_PATH = "T024BE7LD/B03PQ8V2K7M/Xq3vR8mK2pL9wN4tY7uB1cF6"
GOOGLE = "AIzaSyC9fKq3LmN8pR2tV6xZ1bD4gH7jW0yC5eA"
STRIPE_LIVE = "sk_live_51Hq3vR8mK2pL9wN4tY7uB1cF6hJ0dS5gA"
STRIPE_RESTRICTED = "rk_live_51Hq3vR8mK2pL9wN4tY7uB1cF6hJ0dS5gA"
STRIPE_TEST = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkFsaWNlIiwiaWF0IjoxNzAwMDAwMDAwfQ."
    "Hq3vR8mK2pL9wN4tY7uB1cF6hJ0dS5gAzE8iO3rT6yU"
)
PEM_BODY = "\n".join(
    [
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj",
        "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu",
        "NMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ",
    ]
)
PEM = "-----BEGIN PRIVATE KEY-----\n" + PEM_BODY + "\n-----END PRIVATE KEY-----"
RSA_PEM = "-----BEGIN RSA PRIVATE KEY-----\n" + PEM_BODY + "\n-----END RSA PRIVATE KEY-----"
OPENSSH_PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + PEM_BODY + "\n-----END OPENSSH PRIVATE KEY-----"


def redacted(text):
    out, count = redact_text(text)
    return out, count


def assert_gone(out, *secrets):
    for secret in secrets:
        assert secret not in out, "secret %r still in output:\n%s" % (secret, out)


# --------------------------------------------------------------------------------------------
# Each kind, in the places it really turns up


@pytest.mark.parametrize(
    "kind, secret, context",
    [
        ("aws-access-key", AWS_ID, "aws configure set aws_access_key_id {}"),
        ("aws-access-key", AWS_SESSION_ID, "AccessKeyId: {}"),
        ("anthropic-key", ANTHROPIC, "client = Anthropic(api_key='{}')"),
        ("openai-key", OPENAI_OLD, "OpenAI key is {} (old format)"),
        ("openai-key", OPENAI_PROJ, 'curl https://api.openai.com/v1/models -H "X: {}"'),
        ("langfuse-secret-key", LANGFUSE_SECRET, "Langfuse(secret_key={!r})"),
        ("github-token", GITHUB_TOKENS["ghp"], "git clone https://{}@github.com/org/repo.git"),
        ("github-token", GITHUB_TOKENS["gho"], "gh auth status: token {}"),
        ("github-token", GITHUB_TOKENS["ghu"], "user-to-server {}"),
        ("github-token", GITHUB_TOKENS["ghs"], "installation token: {}"),
        ("github-token", GITHUB_TOKENS["ghr"], "refresh={}"),
        ("github-token", GITHUB_TOKENS["pat"], "fine-grained: {}"),
        ("slack-token", SLACK_BOT, 'slack_sdk.WebClient(token="{}")'),
        ("slack-token", SLACK_USER, "user token {}"),
        ("slack-token", SLACK_APP, "socket mode app token {}"),
        ("slack-token", SLACK_LEGACY, "legacy {}"),
        ("google-api-key", GOOGLE, "https://maps.googleapis.com/maps/api/geocode/json?key={}"),
        ("assignment", "Zk8Lq2Nv6Xb1", "https://example.com/cb?access_token={}&state=xyz"),
        ("stripe-key", STRIPE_LIVE, 'stripe.api_key = "{}"'),
        ("stripe-key", STRIPE_RESTRICTED, "restricted {}"),
        ("stripe-key", STRIPE_TEST, "test mode {}"),
        ("jwt", JWT, "Set-Cookie: session={}; Path=/; HttpOnly"),
    ],
)
def test_token_formats_are_redacted_in_context(kind, secret, context):
    text = context.format(secret)
    out, count = redacted(text)
    assert_gone(out, secret)
    assert "[REDACTED:%s]" % kind in out
    assert count >= 1
    # The words around the secret stay readable.
    before = context.split("{")[0]
    assert out.startswith(before)


def test_cat_dotenv_output():
    dotenv = "\n".join(
        [
            "# Langfuse",
            "LANGFUSE_PUBLIC_KEY=" + LANGFUSE_PUBLIC,
            "LANGFUSE_SECRET_KEY=" + LANGFUSE_SECRET,
            "LANGFUSE_BASE_URL=http://localhost:3050",
            "AWS_ACCESS_KEY_ID=" + AWS_ID,
            "AWS_SECRET_ACCESS_KEY=" + AWS_SECRET,
            "ANTHROPIC_API_KEY=" + ANTHROPIC,
            'export OPENAI_API_KEY="%s"' % OPENAI_PROJ,
            "DB_PASSWORD=Tr0ub4dor&3",
            "export API_TOKEN='a8f5f167f44f4964e6c998dee827110c'",
            "SMTP_PASS=hunter2hunter2",
            "DATABASE_URL=postgres://app:Zk8Lq2Nv6Xb1Rc@db.internal:5432/app",
            "SECRET_KEY_PLACEHOLDER_EXAMPLE=${SECRET_KEY}",
            "STRIPE_KEY=<your-stripe-key>",
            "REDIS_PASSWORD=",
            "DEBUG=true",
            "PORT=3000",
        ]
    )
    out, count = redacted(dotenv)
    assert_gone(
        out,
        LANGFUSE_SECRET,
        AWS_ID,
        AWS_SECRET,
        ANTHROPIC,
        OPENAI_PROJ,
        "Tr0ub4dor",
        "a8f5f167f44f4964e6c998dee827110c",
        "hunter2hunter2",
        "Zk8Lq2Nv6Xb1Rc",
    )
    lines = out.splitlines()
    assert lines[0] == "# Langfuse"
    assert lines[1] == "LANGFUSE_PUBLIC_KEY=" + LANGFUSE_PUBLIC  # public keys are not secret
    assert lines[2] == "LANGFUSE_SECRET_KEY=[REDACTED:langfuse-secret-key]"
    assert lines[3] == "LANGFUSE_BASE_URL=http://localhost:3050"
    assert lines[4] == "AWS_ACCESS_KEY_ID=[REDACTED:aws-access-key]"
    assert lines[5] == "AWS_SECRET_ACCESS_KEY=[REDACTED:aws-secret-key]"
    assert lines[6] == "ANTHROPIC_API_KEY=[REDACTED:anthropic-key]"
    assert lines[7] == 'export OPENAI_API_KEY="[REDACTED:openai-key]"'
    assert lines[8] == "DB_PASSWORD=[REDACTED:assignment]"
    assert lines[9] == "export API_TOKEN='[REDACTED:assignment]'"
    assert lines[10] == "SMTP_PASS=[REDACTED:assignment]"
    assert lines[11] == "DATABASE_URL=postgres://app:[REDACTED:url-password]@db.internal:5432/app"
    # Placeholders, empty values and ordinary settings are left alone.
    assert lines[12:] == dotenv.splitlines()[12:]
    assert count == 9


def test_env_dump():
    env = "\n".join(
        [
            "SHELL=/bin/bash",
            "PWD=/home/user/project",
            "OLDPWD=/home/user",
            "HOME=/home/user",
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "LANG=en_US.UTF-8",
            "GITHUB_TOKEN=" + GITHUB_TOKENS["ghp"],
            "SLACK_BOT_TOKEN=" + SLACK_BOT,
            "NPM_TOKEN=9f86d081-884c-4d63-9d2b-0c7b6a2e2f1e",
            "MYSQL_PWD=S3cur3Pa55",
            "PGPASSWORD=pg-Pa55w0rd",
            "HISTSIZE=1000",
            "GIT_COMMIT=3f786850e387550fdab836ed7e6dc881de23001b",
            "CLAUDE_CODE_ENTRYPOINT=cli",
            "MAX_TOKENS=4096",
            "TOKENIZERS_PARALLELISM=false",
        ]
    )
    out, count = redacted(env)
    assert_gone(out, GITHUB_TOKENS["ghp"], SLACK_BOT, "9f86d081-884c-4d63-9d2b-0c7b6a2e2f1e", "S3cur3Pa55", "pg-Pa55w0rd")
    lines = out.splitlines()
    original = env.splitlines()
    for i in (0, 1, 2, 3, 4, 5, 11, 12, 13, 14, 15):
        assert lines[i] == original[i], "changed a non-secret line: %r" % lines[i]
    assert lines[6] == "GITHUB_TOKEN=[REDACTED:github-token]"
    assert lines[7] == "SLACK_BOT_TOKEN=[REDACTED:slack-token]"
    assert lines[8] == "NPM_TOKEN=[REDACTED:assignment]"
    assert lines[9] == "MYSQL_PWD=[REDACTED:assignment]"
    assert lines[10] == "PGPASSWORD=[REDACTED:assignment]"
    assert count == 5


def test_curl_commands():
    cmd = (
        "curl -sS -X POST https://api.example.com/v1/items "
        "-H 'Authorization: Bearer 7f3c9a1e5b2d8f4a6c0e9b1d3f5a7c9e' "
        '-H "x-api-key: Zk8Lq2Nv6Xb1Rc9Wd3Fh" '
        "-H 'Content-Type: application/json' -d '{\"name\": \"x\"}'"
    )
    out, count = redacted(cmd)
    assert_gone(out, "7f3c9a1e5b2d8f4a6c0e9b1d3f5a7c9e", "Zk8Lq2Nv6Xb1Rc9Wd3Fh")
    assert "-H 'Authorization: Bearer [REDACTED:bearer-token]'" in out
    assert '-H "x-api-key: [REDACTED:assignment]"' in out
    assert "-H 'Content-Type: application/json'" in out
    assert count == 2

    out, _ = redacted("curl -H 'Authorization: token %s' https://api.github.com/user" % GITHUB_TOKENS["gho"])
    assert out == "curl -H 'Authorization: token [REDACTED:github-token]' https://api.github.com/user"

    out, _ = redacted("curl -u admin:Zk8Lq2Nv6 http://localhost:9200/_cat/indices")
    assert out == "curl -u admin:[REDACTED:basic-auth] http://localhost:9200/_cat/indices"

    out, _ = redacted("curl --user 'admin:p@ss word' http://x")
    assert out == "curl --user 'admin:[REDACTED:basic-auth]' http://x"

    out, _ = redacted("curl -H 'Authorization: Basic YWRtaW46cGFzc3dvcmQ=' http://x")
    assert out == "curl -H 'Authorization: Basic [REDACTED:authorization]' http://x"


def test_http_headers_and_bearer_in_prose():
    out, _ = redacted("GET /api HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n" % JWT)
    assert_gone(out, JWT)
    assert "Authorization: Bearer [REDACTED:" in out
    out, _ = redacted("used bearer 3c6e0b8a9c15224a8228b9a98ca1531d for the call")
    assert out == "used bearer [REDACTED:bearer-token] for the call"
    out, _ = redacted("proxy-authorization: Basic dXNlcjpwYXNzd29yZA==")
    assert out == "proxy-authorization: Basic [REDACTED:authorization]"


def test_json_config():
    config = json.dumps(
        {
            "database": {"host": "db", "user": "app", "password": "Zk8Lq2Nv6Xb1"},
            "auth": {
                "client_id": "my-app",
                "client_secret": "cs_9fKq3LmN8pR2tV6x",
                "token_type": "Bearer",
                "accessToken": "at-7f3c9a1e5b2d8f4a",
            },
            "usage": {"input_tokens": 1200, "output_tokens": 80, "max_tokens": 4096},
            "publicKey": LANGFUSE_PUBLIC,
        },
        indent=2,
    )
    out, count = redacted(config)
    assert_gone(out, "Zk8Lq2Nv6Xb1", "cs_9fKq3LmN8pR2tV6x", "at-7f3c9a1e5b2d8f4a")
    parsed = json.loads(out)  # structure kept: still valid JSON
    assert parsed["database"] == {"host": "db", "user": "app", "password": "[REDACTED:assignment]"}
    assert parsed["auth"]["client_id"] == "my-app"
    assert parsed["auth"]["token_type"] == "Bearer"
    assert parsed["usage"] == {"input_tokens": 1200, "output_tokens": 80, "max_tokens": 4096}
    assert parsed["publicKey"] == LANGFUSE_PUBLIC
    assert count == 3


def test_yaml_file():
    yaml_text = "\n".join(
        [
            "services:",
            "  db:",
            "    image: postgres:16",
            "    environment:",
            "      POSTGRES_PASSWORD: Zk8Lq2Nv6Xb1",
            "      POSTGRES_USER: app",
            "  app:",
            "    environment:",
            "      - API_TOKEN=tok_4f9a8b7c6d5e",
            "      - LANGFUSE_SECRET_KEY=${LANGFUSE_SECRET_KEY}",
            "smtp:",
            "  password: correcthorse",
            '  api_key: "9fKq3LmN8pR2"',
            "  secret: ${{ secrets.SMTP_SECRET }}",
            "  token_endpoint: https://auth.example.com/token",
        ]
    )
    out, count = redacted(yaml_text)
    assert_gone(out, "Zk8Lq2Nv6Xb1", "tok_4f9a8b7c6d5e", "correcthorse", "9fKq3LmN8pR2")
    lines = out.splitlines()
    assert lines[4] == "      POSTGRES_PASSWORD: [REDACTED:assignment]"
    assert lines[5] == "      POSTGRES_USER: app"
    assert lines[8] == "      - API_TOKEN=[REDACTED:assignment]"
    assert lines[9] == "      - LANGFUSE_SECRET_KEY=${LANGFUSE_SECRET_KEY}"
    assert lines[11] == "  password: [REDACTED:assignment]"
    assert lines[12] == '  api_key: "[REDACTED:assignment]"'
    assert lines[13:] == yaml_text.splitlines()[13:]
    assert lines[:4] == yaml_text.splitlines()[:4]
    assert count == 4


@pytest.mark.parametrize(
    "url, expected",
    [
        (
            "psql postgres://alice:Sup3rS3cret@db.example.com:5432/app",
            "psql postgres://alice:[REDACTED:url-password]@db.example.com:5432/app",
        ),
        ("postgresql://postgres:postgres@localhost/langfuse", "postgresql://postgres:[REDACTED:url-password]@localhost/langfuse"),
        ("REDIS_URL=redis://:a1b2c3d4@cache:6379/0", "REDIS_URL=redis://:[REDACTED:url-password]@cache:6379/0"),
        ("mongodb+srv://svc:p%40ss@cluster0.mongodb.net/db", "mongodb+srv://svc:[REDACTED:url-password]@cluster0.mongodb.net/db"),
        ("amqp://guest:Gu3st!@rabbit:5672/", "amqp://guest:[REDACTED:url-password]@rabbit:5672/"),
        ("https://hooks.slack.com/services/" + SLACK_WEBHOOK_PATH, "https://hooks.slack.com/services/[REDACTED:slack-webhook]"),
    ],
)
def test_connection_urls_keep_scheme_user_and_host(url, expected):
    out, count = redacted(url)
    assert out == expected
    assert count == 1


@pytest.mark.parametrize("block", [PEM, RSA_PEM, OPENSSH_PEM])
def test_private_key_block_inside_other_text(block):
    text = "$ cat ~/.ssh/id_rsa\n" + block + "\n$ ls\nREADME.md\n"
    out, count = redacted(text)
    assert out == "$ cat ~/.ssh/id_rsa\n[REDACTED:private-key]\n$ ls\nREADME.md\n"
    assert count == 1


def test_private_key_cut_before_its_end_line_is_still_redacted():
    text = "$ head -c 120 key.pem\n-----BEGIN EC PRIVATE KEY-----\n" + PEM_BODY[:100]
    out, _ = redacted(text)
    assert out == "$ head -c 120 key.pem\n[REDACTED:private-key]"


def test_private_key_in_json_escaped_form():
    # A tool result re-serialised as JSON: newlines are the two characters backslash, n.
    text = json.dumps({"stdout": "key:\n" + PEM + "\ndone"})
    out, count = redacted(text)
    assert json.loads(out) == {"stdout": "key:\n[REDACTED:private-key]\ndone"}
    assert "MIIEvQIBADAN" not in out
    assert count == 1


def test_public_key_and_certificate_blocks_are_kept():
    cert = "-----BEGIN CERTIFICATE-----\n" + PEM_BODY + "\n-----END CERTIFICATE-----"
    pub = "-----BEGIN PUBLIC KEY-----\n" + PEM_BODY + "\n-----END PUBLIC KEY-----"
    for text in (cert, pub, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host"):
        assert redacted(text) == (text, 0)


# --------------------------------------------------------------------------------------------
# What must not change


@pytest.mark.parametrize(
    "text",
    [
        "the password field is required",
        "Please enter your password and API key in the settings page.",
        "token count: 123",
        "Bearer tokens are sent in the Authorization header.",
        "Authorization: header required for every call",
        '"usage": {"input_tokens": 12, "output_tokens": 345, "cache_read_input_tokens": 6789}',
        "LANGFUSE_PUBLIC_KEY=" + LANGFUSE_PUBLIC,
        "commit 3f786850e387550fdab836ed7e6dc881de23001b",
        "session 1af7fc5e-8455-4414-9ccd-011d40f70b2a",
        "def login(username: str, password: str) -> Token:",
        "password = getpass.getpass()",
        'api_key = os.environ["OPENAI_API_KEY"]',
        "client = OpenAI(api_key=api_key, timeout=10)",
        "token = request.headers.get('X-Token')",
        "const apiKey: string = process.env.API_KEY;",
        "self.secret = secret",
        "if password == confirm_password:",
        'headers = {"Authorization": f"Bearer {token}"}',
        "Authorization: Bearer $GITHUB_TOKEN",
        'tokenizer = {"eos_token": "</s>", "pad_token": "[PAD]", "bos_token": "<s>"}',
        "PASSWORD=${DB_PASSWORD}",
        "API_KEY=<your-api-key>",
        "SECRET=********",
        "TOKEN=xxxxxxxx",
        "OPENAI_API_KEY=sk-...",
        "password: null",
        "PWD=/home/user/project",
        "GOOGLE_APPLICATION_CREDENTIALS=/home/user/keys/service-account.json",
        "ssh://git@github.com:22/org/repo.git",
        "http://localhost:3050/api/public/ingestion",
        "https://user@example.com/path",
        "docker run -u 1000:1000 image",
        "sort -u names.txt",
        "task-management-system-component-library",
        "primary_key = Column(Integer)",
        "sort_key: name",
        "x-request-id: 4f9a8b7c-6d5e-4f3a-9b2c-1d0e9f8a7b6c",
        "already [REDACTED:openai-key] here; PASSWORD=[REDACTED:assignment]",
        "パスワードは設定画面で入力してください",
    ],
)
def test_ordinary_text_is_untouched(text):
    assert redacted(text) == (text, 0)


@pytest.mark.parametrize(
    "name, secret",
    [
        ("GITHUB_TOKEN", True),
        ("clientSecret", True),
        ("x-api-key", True),
        ("PGPASSWORD", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("db.password", True),
        ("--password", True),
        ("Authorization", True),
        ("refresh_token", True),
        ("MYSQL_PWD", True),
        ("APP_KEY", True),
        ("input_tokens", False),
        ("token_count", False),
        ("LANGFUSE_PUBLIC_KEY", False),
        ("sort_key", False),
        ("eos_token", False),
        ("PWD", False),
        ("OLDPWD", False),
        ("password_file", False),
        ("max_token", False),
        ("keyboard", False),
    ],
)
def test_secret_name_rules(name, secret):
    assert is_secret_name(name) is secret


def test_redaction_is_idempotent_and_counts_each_secret_once():
    text = "\n".join(
        [
            "GITHUB_TOKEN=" + GITHUB_TOKENS["ghp"],
            "curl -H 'Authorization: Bearer %s' x" % JWT,
            "postgres://u:Pw0rd@h/db",
            PEM,
        ]
    )
    once, n1 = redacted(text)
    twice, n2 = redacted(once)
    assert n1 == 4
    assert (twice, n2) == (once, 0)


# --------------------------------------------------------------------------------------------
# Settings: user patterns, off switch


def test_user_patterns_whole_match_and_secret_group():
    r = Redactor(extra_patterns=[r"ACME-[0-9]{6}", r"internal_id=(?P<secret>\w+)"])
    out, count = r.redact_text("ticket ACME-123456 and internal_id=abc123 and ACME-12")
    assert out == "ticket [REDACTED:custom] and internal_id=[REDACTED:custom] and ACME-12"
    assert count == 2


def test_user_patterns_from_a_newline_separated_string_keep_builtin_rules():
    r = Redactor(extra_patterns="ACME-[0-9]{6}\n\nemp-[a-z]{4}\n")
    out, count = r.redact_text("ACME-000001 emp-abcd " + AWS_ID)
    assert out == "[REDACTED:custom] [REDACTED:custom] [REDACTED:aws-access-key]"
    assert count == 3


@pytest.mark.parametrize("bad", ["(unclosed", "[a-", "*starts-with-star"])
def test_invalid_user_regex_raises_value_error_naming_it(bad):
    with pytest.raises(ValueError) as info:
        Redactor(extra_patterns=["ok-[0-9]+", bad])
    message = str(info.value)
    assert repr(bad) in message
    assert "CC_LANGFUSE_REDACT_PATTERNS" in message


def test_user_regex_matching_empty_string_is_refused():
    with pytest.raises(ValueError, match="empty string"):
        Redactor(extra_patterns=["x*"])


def test_off_switch_leaves_everything_as_is():
    r = Redactor(enabled=False, extra_patterns=["ACME"])
    text = "GITHUB_TOKEN=%s ACME" % GITHUB_TOKENS["ghp"]
    assert r.redact_text(text) == (text, 0)
    value = {"password": "hunter2", "list": [text]}
    out, count = r.redact_value(value)
    assert out == value and count == 0


# --------------------------------------------------------------------------------------------
# JSON-like values


def test_nested_value_keeps_keys_and_redacts_values():
    value = {
        "type": "tool_use",
        "name": "Bash",
        "input": {"command": "export GITHUB_TOKEN=%s && gh pr list" % GITHUB_TOKENS["ghp"], "description": "List PRs"},
        "config": {
            "password": "x",
            "api_key": "k-123",
            "Authorization": "Bearer abc.def.123",
            "secret": True,
            "token": None,
            "apiKey": 123456,
            "sessionToken": "",
            "client_secret": "<your-secret>",
        },
        "results": [{"stdout": "AKIA ok " + AWS_ID}, ["postgres://a:b1@h/d"], 7, None],
        "usage": {"input_tokens": 10, "output_tokens": 20},
    }
    snapshot = copy.deepcopy(value)
    out, count = redact_value(value)
    assert value == snapshot, "input must not be modified"
    assert list(out) == list(value) and list(out["config"]) == list(value["config"])
    assert out["input"]["command"] == "export GITHUB_TOKEN=[REDACTED:github-token] && gh pr list"
    assert out["input"]["description"] == "List PRs"
    assert out["config"] == {
        "password": "[REDACTED:secret-field]",
        "api_key": "[REDACTED:secret-field]",
        "Authorization": "Bearer [REDACTED:bearer-token]",
        "secret": True,
        "token": None,
        "apiKey": "[REDACTED:secret-field]",
        "sessionToken": "",
        "client_secret": "<your-secret>",
    }
    assert out["results"] == [{"stdout": "AKIA ok [REDACTED:aws-access-key]"}, ["postgres://a:[REDACTED:url-password]@h/d"], 7, None]
    assert out["usage"] == {"input_tokens": 10, "output_tokens": 20}
    assert count == 7


def _first_tool_result_line(path):
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        content = (row.get("message") or {}).get("content")
        if isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content):
            return row
    return None


def test_secrets_injected_into_a_real_transcript_row():
    if not TRANSCRIPTS.is_dir():
        pytest.skip("shared transcripts not available")
    path = next(iter(sorted(TRANSCRIPTS.glob("*.jsonl"))))
    row = _first_tool_result_line(path)
    assert row is not None
    block = next(b for b in row["message"]["content"] if b.get("type") == "tool_result")
    block["content"] = "$ cat .env\nANTHROPIC_API_KEY=%s\nDEBUG=1\n%s" % (ANTHROPIC, RSA_PEM)
    before = copy.deepcopy(row)
    out, count = redact_value(row)
    assert count == 2
    serialised = json.dumps(out)
    assert_gone(serialised, ANTHROPIC, "MIIEvQIBADAN")
    new_block = next(b for b in out["message"]["content"] if b.get("type") == "tool_result")
    assert new_block["content"] == ("$ cat .env\nANTHROPIC_API_KEY=[REDACTED:anthropic-key]\nDEBUG=1\n[REDACTED:private-key]")
    # Everything else in the row is unchanged.
    new_block["content"] = block["content"]
    assert out == before


def _changes(before, after, path=""):
    """(path, old, new) for every scalar that differs."""
    if isinstance(before, dict):
        for key in before:
            yield from _changes(before[key], after[key], "%s/%s" % (path, key))
    elif isinstance(before, list):
        for i, (b, a) in enumerate(zip(before, after, strict=False)):
            yield from _changes(b, a, "%s[%d]" % (path, i))
    elif before != after:
        yield path, before, after


@pytest.mark.skipif(not TRANSCRIPTS.is_dir(), reason="shared transcripts not available")
@pytest.mark.parametrize("path", sorted(TRANSCRIPTS.glob("*.jsonl")) if TRANSCRIPTS.is_dir() else [], ids=lambda p: p.name[:40])
def test_real_transcripts_have_no_false_positives(path):
    # The README of these files reports a secret scan that found nothing: any change made here
    # would be a false positive (several thousand strings of prose, code, tool output, JSON).
    problems = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        row = json.loads(line)
        out, count = redact_value(row)
        problems += ["line %d %s: %r -> %r" % (number, p, b[:200], a[:200]) for p, b, a in _changes(row, out)]
        raw, raw_count = redact_text(line)
        if raw != line:
            problems.append("raw line %d changed (%d)" % (number, raw_count))
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------------
# Adversarial input: must finish (speed itself is measured by bench/, not asserted here)


@functools.lru_cache(maxsize=1)
def _adversarial_inputs():
    rnd = random.Random(7)
    size = 5 * 1000 * 1000
    b64 = base64.b64encode(rnd.randbytes(size * 3 // 4 + 3)).decode()[:size]
    return {
        "a-run": "a" * size,
        "equals-run": "=" * size,
        "colon-run": ":" * size,
        "slash-run": "/" * size,
        "base64": b64,
        "base64-lines": "\n".join(b64[i : i + 76] for i in range(0, size, 76)),
        "key-separators": ("password=" * (size // 9)),
        "open-quotes": ('token="' + "a" * 93) * (size // 100),
        "url-no-at": ("postgres://" + "u" * 200 + ":") * (size // 212),
        "pem-begin-no-end": "-----BEGIN PRIVATE KEY-----" * (size // 27),
        "jwt-prefixes": "eyJ" * (size // 3),
        "mixed": ("a=" * 10 + "://" + "a:" * 10 + "@@@/////" + "secret" + "====" + "tokentoken") * (size // 70),
    }


@pytest.mark.parametrize("name", list(_adversarial_inputs()))
def test_five_megabytes_of_adversarial_text_completes(name):
    text = _adversarial_inputs()[name]
    out, count = redact_text(text)
    assert isinstance(out, str) and count >= 0
    if name in ("a-run", "equals-run", "colon-run", "slash-run", "base64", "base64-lines", "url-no-at", "jwt-prefixes"):
        assert (out, count) == (text, 0)


# --------------------------------------------------------------------------------------------
# Truncation


def test_short_field_is_kept():
    assert truncate_field("abc", 3) == ("abc", None)
    assert truncate_field("", 10) == ("", None)


def test_long_field_is_cut_with_length_and_hash():
    original = "héllo wörld " * 20000  # non-ASCII: hash is over UTF-8 bytes
    out, info = truncate_field(original, 1000)
    digest = hashlib.sha256(original.encode("utf-8")).hexdigest()
    assert info == {"original_length": len(original), "sha256": digest}
    assert out.startswith(original[:1000])
    marker = out[1000:]
    assert marker == "…[truncated: %d chars, sha256 %s…]" % (len(original), digest[:16])


def test_truncation_survives_lone_surrogates_from_json():
    original = json.loads('"\\ud83d broken emoji"') * 10
    out, info = truncate_field(original, 5)
    assert info["original_length"] == len(original)
    assert info["sha256"] == hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()
    assert out.startswith(original[:5])


def test_no_limit_when_max_is_zero_or_none():
    text = "x" * 10
    assert truncate_field(text, 0) == (text, None)
    assert truncate_field(text, None) == (text, None)


def test_json_values_are_cut_as_their_json_text():
    small = {"a": [1, 2, 3]}
    value, info = truncate_json_value(small, 100)
    assert value is small and info is None
    big = {"rows": [{"id": i, "name": "row %d" % i} for i in range(5000)]}
    value, info = truncate_json_value(big, 500)
    serialised = json.dumps(big, ensure_ascii=False, separators=(",", ":"))
    assert isinstance(value, str) and value.startswith(serialised[:500])
    assert info == {"original_length": len(serialised), "sha256": hashlib.sha256(serialised.encode()).hexdigest()}
    assert truncate_json_value("y" * 20, 10)[1]["original_length"] == 20
    assert truncate_json_value(12345, 2) == (12345, None)


# --------------------------------------------------------------------------------------------
# Image placeholders


@pytest.mark.parametrize("size", [0, 1, 2, 3, 1000, 123457])
def test_base64_image_placeholder_gives_decoded_size(size):
    data = base64.b64encode(bytes(random.Random(size).randrange(256) for _ in range(size))).decode()
    block = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}
    text = image_placeholder(block)
    assert text == "[image: image/png, %d bytes]" % size
    if size > 10:
        assert data[:20] not in text


def test_base64_with_line_breaks_counts_only_data():
    raw = bytes(range(256)) * 40
    data = base64.encodebytes(raw).decode()  # 76-char lines with \n
    block = {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": data}}
    assert image_placeholder(block) == "[image: image/jpeg, %d bytes]" % len(raw)


def test_url_and_other_image_sources():
    assert (
        image_placeholder({"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}})
        == "[image: url https://example.com/cat.png]"
    )
    data_url = "data:image/gif;base64," + base64.b64encode(b"GIF89a" + b"\0" * 94).decode()
    text = image_placeholder({"type": "image", "source": {"type": "url", "url": data_url}})
    assert text == "[image: image/gif, 100 bytes]"
    assert (
        image_placeholder(
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": base64.b64encode(b"%PDF" * 10).decode()},
            }
        )
        == "[document: application/pdf, 40 bytes]"
    )
    assert image_placeholder({"type": "image", "source": {"type": "file", "file_id": "file_011"}}) == "[image: file file_011]"
    assert image_placeholder({"type": "image"}) == "[image]"
    assert image_placeholder("not a block") == "[image]"
