"""The deployment files: every command docker-compose runs exists in this project and accepts its flags.

Docker does not run on these machines, so the compose file is checked statically against the real CLI.
"""

import subprocess
import sys
from pathlib import Path

import yaml

import lamp_cli

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


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


def test_dockerfile_copies_every_package_and_the_migrations():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for folder in ("lamp_engine", "store", "worker", "app", "bench", "migrations"):
        assert f"COPY {folder} {folder}" in dockerfile
        assert (ROOT / folder).is_dir()
    assert "pip install -c constraints.txt -e \".[gpu]\"" in dockerfile  # editable: migrations/ stays beside store/
