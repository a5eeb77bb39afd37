"""A run that cannot write its files for want of disk fails with one line naming the folder, whether the write
came from Python (EFBIG, ENOSPC) or from torch's zip writer (its own RuntimeError, which says nothing of the disk).
The disk is made full as the soak makes it, without root: a child process under RLIMIT_FSIZE."""

import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import resource, signal, sys
    from pathlib import Path
    import torch
    from lamp_engine.errors import DiskFullError, disk_writes
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # as Python does by default: the write fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    folder = Path(sys.argv[1])
    try:
        with disk_writes(folder):
            if sys.argv[2] == "torch":
                torch.save({"weights": torch.zeros(10_000)}, folder / "state.pt")
            else:
                (folder / "result.json").write_bytes(b"x" * 10_000)
    except DiskFullError as exc:
        print(exc)
""")


@pytest.mark.slow
@pytest.mark.parametrize("writer", ["torch", "python"])
def test_a_full_disk_is_one_line_naming_the_folder(tmp_path, writer):
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), writer], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith(f"could not write the run's files under {tmp_path}: ") and "\n" not in line
    assert line.endswith("free space there (or raise its quota) and retry the run")
    assert ("torch's writer failed" if writer == "torch" else "File too large") in line


def test_other_errors_pass_through(tmp_path):
    from lamp_engine.errors import disk_writes

    with pytest.raises(FileNotFoundError), disk_writes(tmp_path):
        (tmp_path / "missing" / "file").write_text("x")
    with pytest.raises(RuntimeError, match="not a disk"), disk_writes(tmp_path):
        raise RuntimeError("not a disk")
    with pytest.raises(RuntimeError, match="central directory"), disk_writes(tmp_path):  # a corrupted checkpoint
        raise RuntimeError("[enforce fail at inline_container.cc:231] . PytorchStreamReader failed reading zip "
                           "archive: failed finding central directory")


WORKER_CHILD = textwrap.dedent("""
    import resource, signal, sys
    from worker.jobs import run_training
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    print(run_training(int(sys.argv[1])))
""")


@pytest.mark.slow
def test_a_worker_on_a_full_disk_fails_the_run_in_one_line(postgres_url, redis_url, tmp_path, monkeypatch):
    """What the soak still saw as a bare "OSError: [Errno 27] File too large": a write outside the training loop,
    here the run's uploaded dataset fetched into the worker's LAMP_HOME, on a worker whose disk is full."""
    from lamp_engine.config import RunConfig
    from store.db import session_scope
    from store.files import store_upload
    from store.queries import get_run
    from worker import queue

    rows = "".join(f"a film worth seeing, take {i},{i % 2}\n" for i in range(300))  # about 10 KB, past the limit
    with session_scope() as session:
        reference = store_upload(session, f"text,label\n{rows}".encode(), "reviews.csv")
    run_id = queue.submit_run(RunConfig.from_flat({"model": "tiny-t5", "task": "custom", "train_file": reference,
                                                   "steps": 2, "batch_size": 2, "length": 4, "rank": 2}))
    home = tmp_path / "full-disk-worker"
    home.mkdir()
    monkeypatch.setenv("LAMP_HOME", str(home))  # the store stays PostgreSQL, as on a host that shares no disk
    done = subprocess.run([sys.executable, "-c", WORKER_CHILD, str(run_id)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith(f"{{'run_id': {run_id}, 'status': 'failed'}}")
    with session_scope() as session:
        run = get_run(session, run_id).to_dict()
    assert (run["status"], run["error"]) == ("failed", f"could not write the run's files under {home}: File too "
                                             "large; free space there (or raise its quota) and retry the run")
