"""The package installs without a source checkout: a built wheel in a fresh venv migrates the store, lists runs
and starts the dashboard, with the store's migrations and the dashboard's views inside the installed packages."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def project_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files: what a clean clone of this working tree holds."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return [name for name in listed if (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel only; the dependencies come from this venv's site-packages by path (so
    nothing is downloaded), while the editable install of this checkout is not visible there."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    for name in project_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(work / "dist"), str(source)], check=True, cwd=work, timeout=300)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig."
                                "get_paths()['purelib'])"], capture_output=True, text=True, check=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next((work / "dist").glob("lamp_studio-*.whl"))
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
                   check=True, timeout=300)
    shutil.rmtree(source)
    return venv


def run_lamp(venv: Path, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "LAMP_HOME": str(tmp_path / "home"),
                   **env}
    return subprocess.run([str(venv / "bin" / "lamp"), *args], cwd=tmp_path, env=environment, capture_output=True,
                          text=True, timeout=120)


def test_migrate_and_runs_from_the_wheel_without_torch(installed, tmp_path):
    migrated = run_lamp(installed, tmp_path, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.strip() == f"store at sqlite:///{tmp_path / 'home' / 'lamp.db'} is at the newest schema"
    listed = run_lamp(installed, tmp_path, "runs")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split()[:3] == ["id", "status", "method"]
    probe = subprocess.run(
        [str(installed / "bin" / "python"), "-c",
         "import sys, lamp_cli, store, app; code = lamp_cli.main(['runs']); "
         "print(code, 'torch' in sys.modules, store.__file__, app.__file__)"],
        cwd=tmp_path, env={"HOME": str(tmp_path), "LAMP_HOME": str(tmp_path / "home")}, capture_output=True,
        text=True, timeout=120)
    code, torch_loaded, store_file, app_file = probe.stdout.split()[-4:]
    assert (code, torch_loaded) == ("0", "False"), probe.stderr
    assert store_file.startswith(str(installed)) and app_file.startswith(str(installed))
    package = Path(store_file).parent
    assert sorted(p.name for p in (package / "migrations" / "versions").glob("*.py")) == sorted(
        p.name for p in (ROOT / "store" / "migrations" / "versions").glob("*.py"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_lamp_up_serves_the_dashboard_from_the_wheel(installed, tmp_path, redis_url):
    port = free_port()
    environment = {"PATH": f"{installed / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path),
                   "LAMP_HOME": str(tmp_path / "home"), "REDIS_URL": redis_url}
    up = subprocess.Popen([str(installed / "bin" / "lamp"), "up", "--no-worker", "--port", str(port)], cwd=tmp_path,
                          env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(up.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not any("LAMP Studio is up" in line for line in lines):
            assert up.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5) as response:
            assert response.read().decode() == "ok"
    finally:
        up.terminate()
        up.wait(timeout=60)
        reader.join(timeout=10)
    assert "Traceback" not in "".join(lines)
