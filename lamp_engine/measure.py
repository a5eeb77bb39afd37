"""Peak-memory measurement: the CUDA allocator's peak on GPU, the process's RSS high-water mark on CPU.

On Linux the RSS high-water mark (VmHWM) can be reset by writing 5 to /proc/self/clear_refs, so the peak of
one phase (a training loop, one benchmark variant) can be read apart from what came before it.
"""

from __future__ import annotations

import contextlib
import resource
from pathlib import Path

import torch

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):  # not Linux, or not allowed: the peak then counts from process start
        CLEAR_REFS.write_text("5")


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if STATUS.exists():
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
