"""The deployment files: every command docker-compose runs exists in this project and accepts its flags, no
password is written in them, and a GPU host joins with nothing but REDIS_URL, DATABASE_URL and a GPU.

Docker does not run on these machines (`docker compose config` is not available), so the compose files are
parsed here and checked statically against the real CLI; variables are read as compose interpolates them.
"""

import re
import subprocess
import sys
from pathlib import Path

import yaml

import lamp_cli

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.worker.yml")
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
WORKER = yaml.safe_load((ROOT / "docker-compose.worker.yml").read_text())
VARIABLE = re.compile(r"\$\{(\w+)(:?[-?])?[^}]*\}")  # ${NAME}, ${NAME:-default}, ${NAME:?error}
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|HASH|AUTH", re.IGNORECASE)
URL_CREDENTIALS = re.compile(r"://[^:/@\s]*:([^@\s]+)@")


def strings(node):
    """Every string in a parsed compose file, with the key it is the value of (None inside lists)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, (dict, list)):
                yield from strings(value)
            else:
                yield key, str(value)
    elif isinstance(node, list):
        for item in node:
            yield from (strings(item) if isinstance(item, (dict, list)) else [(None, str(item))])


def variables(text: str) -> dict[str, str]:
    """NAME -> how compose treats it when unset: "required" (${X} or ${X:?..}) or "default" (${X:-..})."""
    return {name: "default" if kind in (":-", "-") else "required" for name, kind in VARIABLE.findall(text)}


def only_references(value: str) -> bool:
    return not VARIABLE.sub("", value).strip()


def lamp_help(command: str) -> str:
    run = subprocess.run([sys.executable, "-c", "import sys, lamp_cli; sys.exit(lamp_cli.main())", command, "--help"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_compose_has_the_services_a_gpu_server_needs():
    assert {"redis", "postgres", "migrate", "app", "worker-gpu0"} <= set(SERVICES)
    assert SERVICES["redis"]["healthcheck"]["test"][-1] == "ping"
    assert "pg_isready" in SERVICES["postgres"]["healthcheck"]["test"][-1]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in SERVICES["postgres"]["volumes"])
    assert SERVICES["app"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_every_worker_reserves_one_nvidia_gpu_and_shares_lamp_home():
    workers = {name: s for name, s in SERVICES.items() if name.startswith("worker-gpu")}
    assert len(workers) >= 2
    for service in workers.values():
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and len(devices[0]["device_ids"]) == 1
        assert "gpu" in devices[0]["capabilities"]
        assert service["command"][:4] == ["lamp", "worker", "--gpu", "0"]
        assert "lamp-home:/lamp" in service["volumes"] and service["environment"]["LAMP_HOME"] == "/lamp"


def test_every_compose_command_exists_with_its_flags():
    commands = [s["command"] for s in SERVICES.values() if s.get("command") and s["command"][0] == "lamp"]
    assert len(commands) >= 4
    for command in commands:
        assert command[1] in lamp_cli.COMMANDS, command
        text = lamp_help(command[1])
        for flag in (word for word in command[2:] if word.startswith("--")):
            assert flag in text, f"{command[1]} has no flag {flag}"


def test_dockerfile_copies_every_package_and_installs_it_plainly():
    import tomllib

    dockerfile = (ROOT / "Dockerfile").read_text()
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = setuptools["package-dir"]  # store.migrations comes from the top-level migrations/ folder
    folders = {mapped.get(name, name.replace(".", "/")).split("/")[0] for name in setuptools["packages"]}
    assert "migrations" in folders
    for folder in folders:
        assert f"COPY {folder} {folder}" in dockerfile and (ROOT / folder).is_dir()
    assert 'pip install -c constraints.txt ".[gpu,mlflow,wandb]"' in dockerfile  # not editable: migrations in store


def test_no_password_is_written_in_a_compose_file():
    for name in COMPOSE_FILES:
        for key, value in strings(yaml.safe_load((ROOT / name).read_text())):
            if key and SECRET_KEY.search(str(key)):
                assert only_references(value), f"{name}: {key} holds a literal: {value!r}"
            for secret in URL_CREDENTIALS.findall(VARIABLE.sub("${}", value)):  # ${..} may hold an example
                assert secret == "${}", f"{name}: a URL with a written password: {value!r}"
            assert "--requirepass" not in value or "$$REDIS_PASSWORD" in value, value


def test_redis_requires_a_password_and_every_client_gives_it():
    redis = SERVICES["redis"]
    assert "--requirepass" in " ".join(redis["command"]) and redis["environment"]["REDIS_PASSWORD"].startswith("${")
    assert redis["environment"]["REDISCLI_AUTH"] == redis["environment"]["REDIS_PASSWORD"]  # the healthcheck's
    lamp_env = COMPOSE["x-lamp"]["environment"]
    assert lamp_env["REDIS_URL"].startswith("redis://:${REDIS_PASSWORD:?")
    assert lamp_env["DATABASE_URL"].startswith("postgresql+psycopg://lamp:${POSTGRES_PASSWORD:?")
    assert "LAMP_PASSWORD_HASH" in lamp_env  # the dashboard on 0.0.0.0 asks for a login
    assert SERVICES["redis"]["ports"][0].startswith("${LAMP_SHARE_ADDRESS:-127.0.0.1}:")  # closed unless shared


def test_the_worker_file_needs_only_the_two_urls_and_a_gpu():
    text = (ROOT / "docker-compose.worker.yml").read_text()
    assert {name for name, kind in variables(text).items() if kind == "required"} == {"REDIS_URL", "DATABASE_URL"}
    (service,) = WORKER["services"].values()
    assert "depends_on" not in service and "ports" not in service  # joins services that run elsewhere
    assert service["command"][:4] == ["lamp", "worker", "--gpu", "0"]
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"] and len(device["device_ids"]) == 1
    assert service["environment"]["LAMP_DATA_DIR"] == "/data" and "./data:/data:ro" in service["volumes"]


def test_env_example_documents_every_variable_and_holds_no_value():
    documented = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            documented[key] = value
    used = {name for file in COMPOSE_FILES for name in variables((ROOT / file).read_text())}
    assert used == set(documented), used ^ set(documented)
    assert all(value == "" for value in documented.values())  # nothing secret is committed
    ignored = subprocess.run(["git", "check-ignore", ".env"], cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.strip() == ".env"


def test_an_optional_caddy_serves_the_dashboard_over_tls():
    tls = SERVICES["tls"]
    assert tls["image"].startswith("caddy:") and tls["profiles"] == ["tls"]  # only with --profile tls
    command = tls["command"]
    assert command[:2] == ["caddy", "reverse-proxy"] and command[command.index("--to") + 1] == "app:8501"
    assert {"80:80", "443:443"} <= set(tls["ports"]) and any(v.endswith(":/data") for v in tls["volumes"])
    lamp_env = COMPOSE["x-lamp"]["environment"]
    assert {"LAMP_BEHIND_TLS", "LAMP_ALLOWED_EMAILS", "LAMP_ALLOWED_DOMAINS"} <= set(lamp_env)
