"""The product runs three ways: from a built wheel in a fresh venv (no checkout at all), from an editable install
(what `make install` makes) and from a source checkout that is not installed. Each migrates the store and starts
the dashboard; the Alembic scripts live in the top-level migrations/ folder, which the wheel ships as the package
`store.migrations` and the editable install maps there."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import threading
import time
import tomllib
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from private_servers import free_port

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("wheel", "editable", "checkout")


@dataclass(frozen=True)
class Install:
    """One way of running the product: the command that stands for `lamp`, the folder it must run in (None: any
    folder), where the store's migrations should be found and whether they import as the package store.migrations
    (not from a checkout that is not installed)."""

    venv: Path
    lamp: list[str]
    cwd: Path | None
    migrations: Path
    as_package: bool = True


def project_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files: what a clean clone of this working tree holds."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return [name for name in listed if (ROOT / name).is_file()]


def copy_checkout(target: Path) -> Path:
    for name in project_files():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target / name)
    return target


def fresh_venv(target: Path) -> Path:
    """A venv without the product; the dependencies come from this venv's site-packages by path (so nothing is
    downloaded), while the editable install of this checkout is not visible there (its .pth is not read)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True, timeout=120)
    site = Path(subprocess.run([str(target / "bin" / "python"), "-c", "import sysconfig; print(sysconfig."
                                "get_paths()['purelib'])"], capture_output=True, text=True, check=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return target


def pip_install(venv: Path, *args: str) -> None:
    """This venv's pip and setuptools install into the fresh one (which has neither)."""
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
                    "--no-deps", "--no-build-isolation", *args], check=True, timeout=300)


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def wheel_install(work: Path) -> Install:
    """The wheel built from a copy of the checkout, installed in a fresh venv; the copy is deleted afterwards."""
    source = copy_checkout(work / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(work / "dist"), str(source)], check=True, cwd=work, timeout=300)
    venv = fresh_venv(work / "venv")
    pip_install(venv, str(next((work / "dist").glob("lamp_studio-*.whl"))))
    shutil.rmtree(source)
    return Install(venv, [str(venv / "bin" / "lamp")], None, site_packages(venv) / "store" / "migrations")


def editable_install(work: Path) -> Install:
    """`pip install -e` of a copy of the checkout, run from another folder: setuptools' finder maps
    store.migrations to the copy's top-level migrations/."""
    source = copy_checkout(work / "src")
    venv = fresh_venv(work / "venv")
    pip_install(venv, "--editable", str(source))
    return Install(venv, [str(venv / "bin" / "lamp")], None, source / "migrations")


def checkout_run(work: Path) -> Install:
    """A copy of the checkout run in place (`python -m lamp_cli`) with the dependencies but not the product."""
    source = copy_checkout(work / "src")
    venv = fresh_venv(work / "venv")
    return Install(venv, [str(venv / "bin" / "python"), "-m", "lamp_cli"], source, source / "migrations",
                   as_package=False)


@pytest.fixture(scope="module")
def installs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Install]:
    """Each kind of install made once for the module, when a test first asks for it."""
    makers = {"wheel": wheel_install, "editable": editable_install, "checkout": checkout_run}
    made: dict[str, Install] = {}

    def get(kind: str) -> Install:
        if kind not in made:
            made[kind] = makers[kind](tmp_path_factory.mktemp(kind))
        return made[kind]

    return get


def environment(install: Install, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"PATH": f"{install.venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path),
            "LAMP_HOME": str(tmp_path / "home"), **extra}


def run_lamp(install: Install, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*install.lamp, *args], cwd=install.cwd or tmp_path, env=environment(install, tmp_path),
                          capture_output=True, text=True, timeout=120)


def package_folder(name: str, mapped: dict[str, str]) -> str:
    """Where setuptools takes a package from: its longest prefix in package-dir, else its name as a path."""
    for prefix in sorted(mapped, key=len, reverse=True):
        if name == prefix or name.startswith(f"{prefix}."):
            return mapped[prefix] + name[len(prefix):].replace(".", "/")
    return name.replace(".", "/")


def test_the_package_list_names_every_folder_of_python_files():
    """pyproject.toml lists the packages by hand (package-dir needs it): a new subpackage must not be left out."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"store.migrations": "migrations"}
    listed = sorted(package_folder(name, setuptools["package-dir"]) for name in setuptools["packages"])
    roots = {folder.split("/")[0] for folder in listed}
    with_python = {str(Path(name).parent) for name in project_files()
                   if name.endswith(".py") and Path(name).parts[0] in roots}
    assert listed == sorted(with_python)


@pytest.mark.slow
def test_migrate_and_runs_from_the_wheel_without_torch(installs, tmp_path):
    installed = installs("wheel")
    listed = run_lamp(installed, tmp_path, "runs")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split()[:3] == ["id", "status", "method"]
    probe = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c",
         "import sys, lamp_cli, store, app; code = lamp_cli.main(['runs']); "
         "print(code, 'torch' in sys.modules, store.__file__, app.__file__)"],
        cwd=tmp_path, env=environment(installed, tmp_path), capture_output=True, text=True, timeout=120)
    code, torch_loaded, store_file, app_file = probe.stdout.split()[-4:]
    assert (code, torch_loaded) == ("0", "False"), probe.stderr
    assert store_file.startswith(str(installed.venv)) and app_file.startswith(str(installed.venv))
    assert sorted(p.name for p in (installed.migrations / "versions").glob("*.py")) == sorted(
        p.name for p in (ROOT / "migrations" / "versions").glob("*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_migrate_upgrades_sqlite_with_the_scripts_of_that_install(installs, tmp_path, kind):
    install = installs(kind)
    migrated = run_lamp(install, tmp_path, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.strip() == f"store at sqlite:///{tmp_path / 'home' / 'lamp.db'} is at the newest schema"
    probe = subprocess.run([str(install.venv / "bin" / "python"), "-c",
                            "from importlib.util import find_spec; from store.db import migrations_dir; "
                            "print(migrations_dir(), getattr(find_spec('store.migrations'), 'origin', None))"],
                           cwd=install.cwd or tmp_path, env=environment(install, tmp_path), capture_output=True,
                           text=True, timeout=60)
    found, package = probe.stdout.split()
    assert found == str(install.migrations), probe.stderr
    assert package == (str(install.migrations / "__init__.py") if install.as_package else "None")
    assert (install.migrations / "env.py").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_lamp_up_serves_the_dashboard(installs, tmp_path, redis_url, kind):
    install = installs(kind)
    port = free_port()
    up = subprocess.Popen([*install.lamp, "up", "--no-worker", "--port", str(port)], cwd=install.cwd or tmp_path,
                          env=environment(install, tmp_path, REDIS_URL=redis_url), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
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
    assert (tmp_path / "home" / "lamp.db").is_file()
