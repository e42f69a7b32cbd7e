"""The benches' one timing helper: a piece of work run after warm-ups and timed repeatedly, the device waited
for at both ends of each run. :func:`timed` keeps every run's wall time (``rnri.core.counting.stopwatch``, the timer
the editor reports with too); :func:`measured` the medians of wall and CPU time and the largest memory growth
(``rnri_lab.bench.measure.measure``), which the cost benches report."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rnri.core.counting import stopwatch
from rnri_lab.bench.measure import Usage, measure


@dataclass(frozen=True)
class Timing:
    """Wall seconds of the timed runs of one piece of work."""

    seconds: tuple[float, ...]  # each timed run, in order
    first: float  # the first warm-up run (compilation and caches happen here); NaN without warm-up

    @property
    def fastest(self) -> float:
        """The least disturbed run (other processes only ever add time)."""
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def timed(work: Callable[[], Any], device: torch.device | str = "cpu", repeats: int = 3, warmups: int = 1) -> Timing:
    """Run ``work`` ``warmups`` times untimed (the first is timed as ``first``), then ``repeats`` times timed."""
    if repeats < 1 or warmups < 0:
        raise ValueError(f"repeats must be at least 1 and warmups at least 0, got {repeats} and {warmups}")
    first = float("nan")
    for i in range(warmups):
        with stopwatch(device) as run:
            work()
        first = run.seconds if i == 0 else first
    runs = []
    for _ in range(repeats):
        with stopwatch(device) as run:
            work()
        runs.append(run.seconds)
    return Timing(tuple(runs), first)


def measured(work: Callable[[], Any], device: torch.device | str = "cpu", repeats: int = 3, warmups: int = 1) -> Usage:
    """Run ``work`` ``warmups`` times untimed, then ``repeats`` times measured: the median wall and CPU seconds (CPU
    time stays honest on a machine others share) and the largest peak memory growth in MiB."""
    if repeats < 1 or warmups < 0:
        raise ValueError(f"repeats must be at least 1 and warmups at least 0, got {repeats} and {warmups}")
    for _ in range(warmups):
        work()
    usages = []
    for _ in range(repeats):
        with measure(device) as usage:
            work()
        usages.append(usage)
    wall, cpu = statistics.median(u.wall_s for u in usages), statistics.median(u.cpu_s for u in usages)
    return Usage(wall, cpu, max(u.peak_mib for u in usages))
