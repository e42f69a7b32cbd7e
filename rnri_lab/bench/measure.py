"""Wall time and peak memory of a block of work, on the CPU (resident set) or a CUDA device (allocator)."""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class Usage:
    """What one block cost: wall and CPU seconds, and the peak memory it added in MiB (NaN where unmeasurable)."""

    wall_s: float = float("nan")
    cpu_s: float = float("nan")  # CPU time of this process, all threads: robust to other processes on the machine
    peak_mib: float = float("nan")


def status_mib(field: str = "VmRSS", pid: int | str = "self") -> float:
    """A memory line of a process's ``/proc/<pid>/status`` in MiB (``VmRSS`` resident, ``VmHWM`` its peak); NaN
    where there is none."""
    match = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    return float(match.group(1)) / 1024 if match else float("nan")


def _reset_cpu_peak() -> bool:
    """Return freed heap to the OS, then reset the resident-set high-water mark (Linux); False where not allowed."""
    libc = ctypes.util.find_library("c")
    if libc and hasattr(ctypes.CDLL(libc), "malloc_trim"):
        ctypes.CDLL(libc).malloc_trim(0)  # else memory freed earlier but still resident hides this block's growth
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


@contextmanager
def measure(device: torch.device | str = "cpu") -> Iterator[Usage]:
    """Time the ``with`` block and record the peak memory it added above what was resident when it began.

    CPU: growth of the resident set's high-water mark (``VmHWM``; includes allocator caching, so small blocks read
    as noise). CUDA: ``torch.cuda.max_memory_allocated`` above the memory allocated at the start.
    """
    device = torch.device(device)
    usage = Usage()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = status_mib("VmRSS") if _STATUS.exists() and _reset_cpu_peak() else float("nan")
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        yield usage
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            usage.peak_mib = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        else:
            grown = status_mib("VmHWM") - base  # NaN stays NaN where the high-water mark could not be reset
            usage.peak_mib = grown if grown != grown or grown > 0 else 0.0
        usage.wall_s = time.perf_counter() - start
        usage.cpu_s = time.process_time() - cpu_start


def add_run_arguments(parser: argparse.ArgumentParser, writes: str) -> None:
    """The flags of every cost bench on the real architectures: their size, the device, the dtype, the threads and
    the folder it ``writes`` its files in."""
    parser.add_argument("--size", choices=("real", "tiny"), default="real")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="default: fp16 on CUDA, else fp32")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=Path("bench-out"), help=f"writes {writes} here")


def run_dtype(args: argparse.Namespace) -> str:
    """Apply ``--threads``; the dtype to run at (``--dtype``, else fp16 on CUDA and fp32 elsewhere)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return args.dtype or ("float16" if torch.device(args.device).type == "cuda" else "float32")
