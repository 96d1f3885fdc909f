"""Redaction corpus: what must be redacted (POSITIVE, VALUES) and what must stay (NEGATIVE).

Driven by tests/test_redaction_corpus.py. Every secret is a made-up value of the real format
(prefix, length, alphabet), generated from a fixed seed so the file holds no real credential.

POSITIVE: (kind, template, secret). "@@" in the template marks where the secret goes; after
redaction the text must equal the template with "@@" replaced by "[REDACTED:<kind>]", i.e. the
secret is gone, the kind is named and every other character stays.

EXACT: (text, expected output) for cases where more than one rule takes part.

VALUES: (JSON-like value, expected value) through redact_value (pasted credential files as
parsed JSON: dict keys decide).

NEGATIVE: ordinary code, prose, tool output and placeholders that must come out unchanged.

Placeholders that stay (documented in redaction.py next to _PLACEHOLDER_WORDS): "changeme",
"changeit", "password", "secret", "token", "example", "value", "dummy", "fake", "sample", "none",
"null", "redacted", "todo"; runs of x * . - _ # ?; "<password>", "[password]", "%PASSWORD%";
"${PASSWORD}", "$PASSWORD", "$(cmd)", "{{ .Values.x }}", "{name}", "%s"; "your_password",
"api_key_here"; anything containing "..." or "…". A real-looking word ("hunter2horse",
"correcthorsebattery") is redacted in a password/secret assignment.
"""

import base64
import random

_RND = random.Random(20261202)
_B62 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_B64URL = _B62 + "_-"


def _pick(alphabet, n):
    # Always holds each class of character (digit, upper case, lower case) the alphabet has.
    classes = [cls for cls in (str.isdigit, str.isupper, str.islower) if any(cls(c) for c in alphabet)]
    while True:
        s = "".join(_RND.choice(alphabet) for _ in range(n))
        if all(any(cls(c) for c in s) for cls in classes):
            return s


def hexs(n):
    return _pick("0123456789abcdef", n)


def b62(n):
    return _pick(_B62, n)


def b64url(n):
    return _pick(_B64URL, n)


def upper36(n):
    return _pick("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", n)


PW = "Zk8Lq2Nv6Xb1"  # a password as people type them
PW_WORD = "correcthorsebattery"  # a plain-word password
AKIA = "AKIA" + upper36(16)
ASIA = "ASIA" + upper36(16)
AWS_SECRET = _pick(_B62 + "+/", 40)
SIG_HEX = hexs(64)
AZURE_SIG = b62(43) + "%3D"
SESSION_TOKEN = "FwoGZXIvYXdzE" + _pick(_B62 + "+/", 180)
SA_PRIVATE_KEY_ID = hexs(40)
RAILS_SECRET = hexs(128)
DOCKER_AUTH = base64.b64encode(("robot:" + b62(30)).encode()).decode()
KUBE_KEY_DATA = base64.b64encode(b"-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA" + b62(60).encode()).decode()
AZURE_ACCOUNT_KEY = base64.b64encode(bytes(_RND.randrange(256) for _ in range(64))).decode()

POSITIVE = [
    # ---- passwords on client command lines
    ("cli-password", "mysql -uroot -p@@ app_db", "S3cr3tPw"),
    ("cli-password", "mysql -h db.internal -u app -p@@ -e 'select 1'", PW_WORD),
    ("cli-password", "mysqldump -u root -p'@@' shop > shop.sql", "Zk8 Lq2!x"),
    ("cli-password", 'mariadb -u root -p"@@" -D app', PW),
    ("cli-password", "mysql --user=app --password=@@ app", PW),
    ("cli-password", "docker exec -it db mysql -uroot -p@@ -e 'show databases'", PW),
    ("cli-password", "kubectl exec deploy/db -- mysqladmin -uroot -p@@ status", PW),
    ("cli-password", "mongosh -u admin -p @@ --authenticationDatabase admin", PW),
    ("cli-password", "mongosh --username admin --password @@ mongodb://db:27017", PW),
    ("cli-password", "mongodump --uri mongodb://db:27017 -u backup --password=@@ --out /tmp/dump", PW),
    ("cli-password", "mongo admin -u root -p @@", PW_WORD),
    ("cli-password", "redis-cli -h cache -a @@ ping", PW),
    ("cli-password", "redis-cli --pass @@ --no-auth-warning info", PW),
    ("cli-password", "valkey-cli -a @@ keys '*'", PW),
    ("cli-password", "docker login -u robot -p @@ registry.example.com", PW),
    ("cli-password", "docker login registry.example.com --username robot --password @@", PW),
    ("cli-password", "podman login quay.io -u me -p @@", PW),
    ("cli-password", "helm registry login ghcr.io --username me --password @@", PW),
    ("cli-password", "helm repo add private https://charts.example.com --username ci --password @@", PW),
    ("cli-password", "oras login ghcr.io -u me -p @@", PW),
    ("cli-password", "skopeo copy --src-creds robot:@@ docker://a/b docker://c/d", PW),
    ("cli-password", "az login --service-principal -u 0f2b7c1e-app -p @@ --tenant contoso", PW),
    ("cli-password", "sshpass -p @@ ssh deploy@10.0.0.5", PW),
    ("cli-password", "sshpass -p@@ scp app.tar deploy@host:/srv", PW),
    ("cli-password", "sshpass -p '@@' rsync -a ./ host:/srv", "with space 9"),
    ("cli-password", "mysql -uroot -p@@ app", "!Secret9#"),
    ("cli-password", 'healthcheck: ["CMD", "mysqladmin", "ping", "-uroot", "-p@@"]', PW),
    ("cli-password", 'subprocess.run(["sshpass", "-p", "@@", "ssh", host], check=True)', PW),
    ("cli-password", "args = ['redis-cli', '-h', 'cache', '-a', '@@', 'ping']", PW),
    ("cli-password", "twine upload -u alice -p @@ dist/*", PW),
    ("cli-password", "ldapsearch -x -D cn=admin,dc=example,dc=org -w @@ -b dc=example,dc=org", PW),
    ("cli-password", "sqlcmd -S tcp:db,1433 -U sa -P @@ -Q 'SELECT 1'", PW),
    ("cli-password", "openssl pkcs12 -export -in c.pem -out c.p12 -passout pass:@@", PW),
    ("cli-password", "openssl enc -aes-256-cbc -k @@ -in a -out a.enc", PW),
    ("cli-password", "keytool -importcert -keystore ks.jks -storepass @@ -file ca.pem", PW),
    ("cli-password", "$ some-tool deploy --token @@ --region eu", b62(32)),
    ("cli-password", "vault login --method=userpass username=me --client-secret '@@'", PW),
    ("cli-password", "wget --user=me --password @@ https://files.example.com/a.zip", PW),
    # connection strings and variables
    ("url-password", "psql postgresql://app:@@@db:5432/app", PW),
    ("url-password", "memcached://cache:@@@mc.internal:11211", PW),
    ("url-password", "CACHE_URL=rediss://default:@@@redis.example.com:6380/0", PW),
    ("assignment", "PGPASSWORD=@@ psql -h db -U app", PW),
    ("assignment", 'psql "host=db user=app password=@@ dbname=app sslmode=require"', PW),
    ("assignment", "Server=tcp:db,1433;Database=app;Uid=sa;Pwd=@@;Encrypt=yes", PW),
    ("assignment", "jdbc:mysql://db:3306/app?user=app&password=@@&useSSL=true", PW),
    # ---- plain-word values in password / secret assignments
    ("assignment", 'password = "@@"', "hunter2horse"),
    ("assignment", "secret: @@", PW_WORD),
    ("assignment", "  db_password: @@", PW_WORD),
    ("assignment", "DB_PASSWORD=@@", "tablespoon"),
    ("assignment", "const adminPassword = '@@';", "letmeinplease"),
    ("assignment", "P: ${DB_PASSWORD:-@@}", "hunter2x"),
    ("assignment", 'secret = f"@@"', "Zk8Lq2Nv6Xb1-no-braces"),
    ("assignment", "config.client_secret = '@@'", "bluewhale"),
    # ---- signed storage URLs
    (
        "signed-url",
        "https://b.s3.amazonaws.com/k.zip?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20260101T000000Z"
        "&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=@@",
        SIG_HEX,
    ),
    (
        "signed-url",
        "https://b.s3.amazonaws.com/k?X-Amz-Security-Token=@@&X-Amz-Date=20260101T000000Z",
        SESSION_TOKEN.replace("+", "%2B").replace("/", "%2F"),
    ),
    (
        "signed-url",
        "https://b.s3.amazonaws.com/k?X-Amz-Credential=@@&X-Amz-Date=20260101T000000Z",
        "svc%2F20260101%2Feu-west-1%2Fs3%2Faws4_request",
    ),
    (
        "signed-url",
        "https://storage.googleapis.com/bkt/o.bin?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Date=20260101T000000Z"
        "&X-Goog-Expires=900&X-Goog-SignedHeaders=host&X-Goog-Signature=@@",
        hexs(512),
    ),
    (
        "signed-url",
        "https://acct.blob.core.windows.net/c/b.txt?sv=2022-11-02&ss=b&srt=o&sp=r&se=2026-01-01T00:00:00Z&spr=https&sig=@@",
        AZURE_SIG,
    ),
    ("signed-url", '<a href="https://x.blob.core.windows.net/c/b?sv=2022-11-02&amp;sig=@@">', AZURE_SIG),
    ("signed-url", "https://d111.cloudfront.net/v.mp4?Expires=1767225600&Signature=@@&Key-Pair-Id=K2JCJMDEHXQW5F", b64url(172)),
    ("signed-url", '{"url":"https://b.s3.amazonaws.com/k?X-Amz-Date=1\\u0026X-Amz-Signature=@@"}', SIG_HEX),
    (
        "signed-url",
        "Authorization: AWS4-HMAC-SHA256 Credential=svc/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=@@",
        SIG_HEX,
    ),
    # ---- generated secrets in well-known settings
    ("assignment", "SECRET_KEY_BASE=@@", RAILS_SECRET),
    ("assignment", "secret_key_base: @@", RAILS_SECRET),
    ("assignment", "APP_KEY=@@", "base64:" + base64.b64encode(bytes(_RND.randrange(256) for _ in range(32))).decode()),
    ("assignment", "NEXTAUTH_SECRET=@@", base64.b64encode(bytes(_RND.randrange(256) for _ in range(32))).decode()),
    ("assignment", "SALT=@@", hexs(32)),
    ("assignment", "PASSWORD_SALT=@@", hexs(64)),
    ("assignment", "ENCRYPTION_KEY=@@", hexs(64)),
    ("assignment", "GITHUB_WEBHOOK_SECRET=@@", hexs(40)),
    ("assignment", "define( 'AUTH_SALT',        '@@' );", "m]-s5|q8}=X^+gZ#0#;R9XnJ!J$E,0m|hWw_(mIB|V-r%K@Lv)GB&DyN 5Y4J"),
    ("assignment", "define('NONCE_KEY', '@@');", "Yx#7c!tq@z-Lw5^p/m2]V}s9&eR4,uK8"),
    ("assignment", "'SECURE_AUTH_SALT' => '@@',", "T9$kq#2Lm!xP7@vW4^cN8&"),
    ("assignment", "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=@@;EndpointSuffix=core.windows.net", AZURE_ACCOUNT_KEY),
    ("assignment", "[Peer]\nPresharedKey = @@\nAllowedIPs = 10.0.0.0/24", AZURE_ACCOUNT_KEY[:43] + "="),
    # ---- newer token prefixes
    ("github-token", "GH_TOKEN=@@", "github_pat_11" + upper36(20) + "_" + b62(59)),
    ("github-token", "gh auth token -> @@", "gho_" + b62(36)),
    ("github-token", "user-to-server: @@", "ghu_" + b62(36)),
    ("github-token", "installation token @@ expires in 1h", "ghs_" + b62(36)),
    ("github-token", "refresh_token=@@", "ghr_" + b62(36)),
    ("gitlab-token", "export GITLAB_TOKEN=@@", "glpat-" + b64url(20)),
    ("gitlab-token", "PRIVATE-TOKEN: @@", "glpat-" + b64url(27) + ".01.1" + hexs(8)),
    ("gitlab-token", "gitlab-runner register --token @@", "glrt-" + b64url(20)),
    ("gitlab-token", "deploy token @@ (read_registry)", "gldt-" + b64url(20)),
    (
        "gitlab-token",
        "curl -X POST -F token=@@ -F ref=main https://gitlab.example.com/api/v4/projects/1/trigger/pipeline",
        "glptt-" + hexs(40),
    ),
    ("slack-token", "SLACK_APP_TOKEN=@@", "xapp-1-A0" + upper36(9) + "-" + "1234567890123" + "-" + hexs(64)),
    ("npm-token", "//registry.npmjs.org/:_authToken=@@", "npm_" + b62(36)),
    ("pypi-token", "password = @@", "pypi-AgEIcHlwaS5vcmc" + b64url(120)),
    ("huggingface-token", "HF_TOKEN=@@", "hf_" + _pick("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", 34)),
    ("openai-key", "OPENAI_API_KEY=@@", "sk-proj-" + b64url(74) + "T3BlbkFJ" + b64url(74)),
    ("openai-key", "service account key @@", "sk-svcacct-" + b64url(58) + "T3BlbkFJ" + b64url(58)),
    ("anthropic-key", "ANTHROPIC_ADMIN_KEY=@@", "sk-ant-admin01-" + b64url(93) + "AA"),
    ("anthropic-key", "CLAUDE_CODE_OAUTH_TOKEN=@@", "sk-ant-oat01-" + b64url(93) + "AA"),
    ("stripe-key", "STRIPE_KEY=@@", "rk_live_" + b62(99)),
    ("stripe-key", "endpoint secret: @@", "whsec_" + b62(32)),
    ("sendgrid-key", "SENDGRID_API_KEY=@@", "SG." + b64url(22) + "." + b64url(43)),
    ("twilio-key", "TWILIO_API_KEY=@@", "SK" + hexs(32)),
    ("doppler-token", "DOPPLER_TOKEN=@@", "dp.pt." + b62(43)),
    ("doppler-token", "doppler run --token @@ -- ./app", "dp.st.prd." + b62(40)),
    ("vault-token", "VAULT_TOKEN=@@", "hvs.CAESI" + b64url(90)),
    ("vault-token", "batch token @@", "hvb.AAAAAQ" + b64url(138)),
    ("digitalocean-token", "doctl auth init -t @@", "dop_v1_" + hexs(64)),
    ("linear-key", "LINEAR_API_KEY=@@", "lin_api_" + b62(40)),
    ("databricks-token", "DATABRICKS_TOKEN=@@", "dapi" + hexs(32)),
    ("databricks-token", "token @@ works", "dapi" + hexs(32) + "-2"),
    ("shopify-token", "X-Shopify-Access-Token: @@", "shpat_" + hexs(32)),
    ("shopify-token", "app secret @@", "shpss_" + hexs(32)),
    ("atlassian-token", "JIRA_API_TOKEN=@@", "ATATT3xFfGF0" + b64url(170) + "=" + hexs(8).upper()),
    ("postman-key", "POSTMAN_API_KEY=@@", "PMAK-" + hexs(24) + "-" + hexs(34)),
    ("supabase-key", "SUPABASE_ACCESS_TOKEN=@@", "sbp_" + hexs(40)),
    ("supabase-key", "secret key @@", "sb_secret_" + b64url(32)),
    ("grafana-token", "GRAFANA_SA_TOKEN=@@", "glsa_" + b62(32) + "_" + hexs(8)),
    ("grafana-token", "cloud token @@", "glc_" + b62(120) + "=="),
    ("newrelic-key", "NEW_RELIC_API_KEY=@@", "NRAK-" + upper36(27)),
    ("sentry-token", "SENTRY_AUTH_TOKEN=@@", "sntryu_" + hexs(64)),
    ("age-secret-key", "# created: 2026-01-01\n@@\n", "AGE-SECRET-KEY-1" + _pick("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58)),
    ("azure-client-secret", "AZURE_CLIENT_SECRET=@@", "abc8Q~" + b62(34)),
    ("rubygems-key", "GEM_HOST_API_KEY=@@", "rubygems_" + hexs(48)),
    ("pulumi-token", "PULUMI_ACCESS_TOKEN=@@", "pul-" + hexs(40)),
    ("heroku-key", "HEROKU_API_KEY=@@", "HRKU-AA" + b64url(58)),
    ("notion-token", "NOTION_TOKEN=@@", "ntn_" + "12345678901" + b62(35)),
    ("1password-token", "OP_SERVICE_ACCOUNT_TOKEN=@@", "ops_eyJ" + _pick(_B62 + "+/", 400) + "="),
    # ---- credential files pasted as text
    (
        "private-key",
        '{"type": "service_account", "private_key": "@@\\n"}',
        "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADAN" + b62(60) + "\\n-----END PRIVATE KEY-----",
    ),
    ("assignment", '{"type": "service_account", "project_id": "demo", "private_key_id": "@@"}', SA_PRIVATE_KEY_ID),
    ("aws-secret-key", '{"Credentials": {"SecretAccessKey": "@@"}}', AWS_SECRET),
    ("assignment", '"SessionToken": "@@",', SESSION_TOKEN),
    ("assignment", '{"clientId": "0f2b7c1e", "clientSecret": "@@", "tenantId": "t"}', "Yx8~" + b62(30)),
    ("assignment", '{"auths": {"registry.example.com": {"auth": "@@"}}}', DOCKER_AUTH),
    ("assignment", "//npm.pkg.github.com/:_authToken=@@", b62(40)),
    ("assignment", "_auth=@@\nalways-auth=true", DOCKER_AUTH),
    ("netrc-password", "machine api.heroku.com login me@example.com password @@", b62(24)),
    ("netrc-password", "machine github.com\n  login octocat\n  password @@\n", b62(24)),
    ("netrc-password", "default login anonymous password @@", PW_WORD),
    ("assignment", "users:\n- name: ci\n  user:\n    token: @@\n", b62(48)),
    ("assignment", "users:\n- name: admin\n  user:\n    client-key-data: @@\n", KUBE_KEY_DATA),
]

EXACT = [
    # The access key id inside X-Amz-Credential is named by its own rule.
    (
        "https://b.s3.amazonaws.com/k?X-Amz-Credential=%s%%2F20260101%%2Fus-east-1%%2Fs3%%2Faws4_request&X-Amz-Signature=%s"
        % (AKIA, SIG_HEX),
        "https://b.s3.amazonaws.com/k?X-Amz-Credential=[REDACTED:aws-access-key]%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Signature=[REDACTED:signed-url]",
    ),
    (
        '{"AccessKeyId": "%s", "SecretAccessKey": "%s", "SessionToken": "%s", "Expiration": "2026-01-01T00:00:00Z"}'
        % (ASIA, AWS_SECRET, SESSION_TOKEN),
        '{"AccessKeyId": "[REDACTED:aws-access-key]", "SecretAccessKey": "[REDACTED:aws-secret-key]", '
        '"SessionToken": "[REDACTED:assignment]", "Expiration": "2026-01-01T00:00:00Z"}',
    ),
    (
        "docker run -p 3306:3306 mysql:8 && mysql -h 127.0.0.1 -P 3306 -uroot -p%s" % PW,
        "docker run -p 3306:3306 mysql:8 && mysql -h 127.0.0.1 -P 3306 -uroot -p[REDACTED:cli-password]",
    ),
    (
        "mysql -uroot \\\n  -p%s \\\n  app" % PW,
        "mysql -uroot \\\n  -p[REDACTED:cli-password] \\\n  app",
    ),
]

VALUES = [
    (
        {
            "type": "service_account",
            "project_id": "demo-project",
            "private_key_id": SA_PRIVATE_KEY_ID,
            "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN" + b62(60) + "\n-----END PRIVATE KEY-----\n",
            "client_email": "svc@demo-project.iam.gserviceaccount.com",
            "client_id": "104729348712398471234",
            "token_uri": "https://oauth2.googleapis.com/token",
        },
        {
            "type": "service_account",
            "project_id": "demo-project",
            "private_key_id": "[REDACTED:secret-field]",
            "private_key": "[REDACTED:secret-field]",
            "client_email": "svc@demo-project.iam.gserviceaccount.com",
            "client_id": "104729348712398471234",
            "token_uri": "https://oauth2.googleapis.com/token",
        },
    ),
    (
        {"Credentials": {"AccessKeyId": ASIA, "SecretAccessKey": AWS_SECRET, "SessionToken": SESSION_TOKEN, "Expiration": "2026"}},
        {
            "Credentials": {
                "AccessKeyId": "[REDACTED:aws-access-key]",
                "SecretAccessKey": "[REDACTED:secret-field]",
                "SessionToken": "[REDACTED:secret-field]",
                "Expiration": "2026",
            }
        },
    ),
    (
        {"appId": "0f2b7c1e", "displayName": "ci", "password": "Yx8~" + b62(30), "tenant": "contoso"},
        {"appId": "0f2b7c1e", "displayName": "ci", "password": "[REDACTED:secret-field]", "tenant": "contoso"},
    ),
    (
        {"auths": {"ghcr.io": {"auth": DOCKER_AUTH}, "quay.io": {"auth": "", "identitytoken": b62(40)}}},
        {"auths": {"ghcr.io": {"auth": "[REDACTED:secret-field]"}, "quay.io": {"auth": "", "identitytoken": "[REDACTED:secret-field]"}}},
    ),
    (
        {
            "users": [
                {
                    "name": "admin",
                    "user": {"client-certificate-data": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t", "client-key-data": KUBE_KEY_DATA},
                }
            ]
        },
        {
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t",
                        "client-key-data": "[REDACTED:secret-field]",
                    },
                }
            ]
        },
    ),
    (
        {"SECRET_KEY_BASE": RAILS_SECRET, "RAILS_ENV": "production"},
        {"SECRET_KEY_BASE": "[REDACTED:secret-field]", "RAILS_ENV": "production"},
    ),
    ({"salt": hexs(32), "rounds": 12}, {"salt": "[REDACTED:secret-field]", "rounds": 12}),
    ({"secret_id": "9f86d081-884c-4d63-9d2b-0c7b6a2e2f1e", "role_id": "db"}, {"secret_id": "[REDACTED:secret-field]", "role_id": "db"}),
]

_COMMIT = "3f786850e387550fdab836ed7e6dc881de23001b"
_UUID = "1af7fc5e-8455-4414-9ccd-011d40f70b2a"
_PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(_RND.randrange(256) for _ in range(600))).decode()

NEGATIVE = [
    # hashes, ids, digests
    "commit " + _COMMIT,
    "git checkout " + _COMMIT[:12],
    "sha256:" + hexs(64),
    'etag: "' + hexs(32) + '"',
    "session " + _UUID,
    '{"id": "' + _UUID + '", "parentUuid": null}',
    "docker pull ghcr.io/org/app@sha256:" + hexs(64),
    "integrity sha512-" + base64.b64encode(bytes(range(64))).decode(),
    'cache_key = "' + hexs(40) + '"',
    '{"requestId": "' + hexs(32) + '", "private_network_id": "' + _UUID + '"}',
    "private_subnet_id: subnet-0" + hexs(16),
    "SECRET_NAME=prod/app/db-credentials",
    "secret_arn: arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf",
    "PUBLIC_KEY=" + AZURE_ACCOUNT_KEY[:43] + "=",
    "[Interface]\nPublicKey = " + AZURE_ACCOUNT_KEY[:43] + "=",
    "GIT_COMMIT_SECRET_SCAN=" + _COMMIT[:8],
    # variable names, code
    "password_field = forms.CharField(widget=forms.PasswordInput)",
    "secret = get_secret()",
    "token = self.get_token(user)",
    "if not password_matches(password, stored_hash):",
    "def check_password(self, raw_password: str) -> bool:",
    "salt = bcrypt.gensalt()",
    "salt: bytes",
    "signature = hmac.new(key, body, hashlib.sha256).hexdigest()",
    "sig = sign(payload, private_key)",
    "verify(signature=sig, data=payload)",
    "const { password, ...rest } = req.body;",
    "export const SECRET_KEY_BASE = process.env.SECRET_KEY_BASE;",
    "SECRET_KEY_BASE=${SECRET_KEY_BASE}",
    "define('DB_PASSWORD', getenv('DB_PASSWORD'));",
    "define( 'AUTH_KEY', 'put your unique phrase here' );",
    "define('WP_DEBUG', false);",
    "parser.add_argument('--password', help='database password')",
    'parser.add_argument("--token", default=None)',
    "@click.option('--api-key', envvar='API_KEY')",
    "client = redis.Redis(host='cache', password=os.environ['REDIS_PASSWORD'])",
    "mysql.connector.connect(user='app', password=settings.DB_PASSWORD)",
    # docs and prose about passwords
    "Run `mysql -u root -p` and type the password when asked.",
    "mysql -p prompts for the password; never pass it as -pPASSWORD on the command line.",
    "Use mysql -u root -p<password> only on a private machine.",
    "mysql -u root -p[password] db_name",
    "The docker login -p flag is insecure; use --password-stdin.",
    "WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
    "echo $TOKEN | docker login ghcr.io -u me --password-stdin",
    "sshpass -p password ssh user@host",
    "sshpass -f ~/.ssh/pass ssh user@host",
    "redis-cli -a <password> ping",
    "redis-cli -a $REDIS_PASSWORD ping",
    "mongosh -u admin -p --authenticationDatabase admin",
    "docker login -u robot -p ${{ secrets.REGISTRY_TOKEN }} ghcr.io",
    "helm repo add bitnami https://charts.bitnami.com/bitnami",
    "openssl enc -aes-256-cbc -pass env:ENC_PASS -in a -out a.enc",
    "openssl req -new -passout file:pass.txt -out req.csr",
    "keytool -list -keystore cacerts -storepass changeit",
    "pass --token with your personal access token",
    "use the --token flag or set GITHUB_TOKEN",
    "gh auth login --with-token < token.txt",
    "claude --max-tokens 4096 --model opus",
    "docker build --secret id=npmrc,src=$HOME/.npmrc .",
    "Set a strong password: at least 12 characters.",
    "The secret: keep it out of git.",
    "Rotate the webhook secret every 90 days.",
    "machine learning models need a login page and a password reset flow",
    "the default login is admin and the password is printed on first start",
    # command lines that only look like it
    "docker run -p 8080:80 -p 8443:443 nginx",
    "docker compose -p myproject up -d",
    "podman run --rm -p 5432:5432 postgres:16",
    "mkdir -p build/out && cp -a src build/",
    "ssh -p 2222 deploy@host",
    "psql -h db -p 5432 -U app app",
    "mysql -h 127.0.0.1 -P 3306 -u root",
    "gcc -pthread main.c $(mysql_config --libs)",
    "pip install mysql-connector-python -q",
    "redis-cli -n 2 --scan --pattern 'user:*'",
    "ldapsearch -x -W -D cn=admin,dc=example,dc=org",
    "sqlcmd -S db -U sa -P",
    "az login --use-device-code",
    # placeholders and templates
    'password = "changeme"',
    "password: <password>",
    "PASSWORD=${PASSWORD}",
    "password: '***'",
    "DB_PASSWORD=your_password_here",
    "api_key: %API_KEY%",
    'secret: "{{ .Values.secret }}"',
    "SECRET_KEY_BASE=<generate with rails secret>",
    'sshpass -p "$SSHPASS" ssh host',
    "mysql -uroot -p$MYSQL_ROOT_PASSWORD",
    'mysql -uroot -p"${MYSQL_PASSWORD}" app',
    "https://b.s3.amazonaws.com/k?X-Amz-Signature=...",
    "https://acct.blob.core.windows.net/c?sv=2022-11-02&sig=<signature>",
    "https://example.com/api?sig=abc&page=2",
    "machine api.example.com login me password <token>",
    "machine api.example.com login me password mypassword",
    'test: ["CMD", "mysqladmin", "ping", "-h", "localhost", "-u", "root", "-p$$MYSQL_ROOT_PASSWORD"]',
    "docker login -u $(USER) -p $(TOKEN) $(REGISTRY)",
    "mysql -uroot -p$(cat /run/secrets/db_pw) app",
    "mysql -uroot -p%MYSQL_PWD% app",
    "  --password PASSWORD    database password\n  --api-key API_KEY      service key\n  --token TOKEN",
    "Usage: sshpass [-f filename|-d number|-p password|-e] command arguments",
    "  -p, --password[=name] Password to use when connecting to server.",
    '"mysql": (("-p",), (), ("--password",), False),',
    'subprocess.run(["sshpass", "-p", password, "ssh", host])',
    "(mysql -pX, mongosh -p X, redis-cli -a X)",
    '# "sshpass -p flag" in prose is not a password',
    'cmd = ["docker", "run", "-p", "8080:80", "nginx"]',
    'password = "value"',
    "  DATABASE_URL: postgresql://postgres:${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is not set}@postgres:5432/db",
    "      MINIO_ROOT_PASSWORD: ${MINIO_ROOT_PASSWORD:?MINIO_ROOT_PASSWORD is not set - run scripts/generate-env.sh}",
    "token = f\"{unquote(p.username or '')}:{unquote(p.password or '')}\".encode()",
    "sshpass -p value ssh host",
    # base64 image data, thinking signatures, long JSON
    '{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "' + _PNG_B64 + '"}}',
    "data:image/png;base64," + _PNG_B64,
    '{"type": "thinking", "thinking": "", "signature": "' + b64url(300) + '"}',
    '{"usage": {"input_tokens": 12, "cache_creation_input_tokens": 3456, "output_tokens": 789}}',
    # token-looking prefixes in ordinary words
    "SKIP_TESTS=1 SKU=SK12 DESK=" + hexs(8),
    "dapi-client v2 and dp.pt are folder names",
    "hvs.tsv holds the survey; lin_api_docs.md",
    "SG.Component renders the graph",
    "glc_version = 3",
]
