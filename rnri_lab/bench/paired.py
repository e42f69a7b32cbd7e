"""Paired bootstrap intervals over photos, for benchmarks whose rows share their photos and edits.

A photo is the unit that is resampled: its edits (and its inversions under several noise seeds) move together, as
they are not independent of each other. Rows are compared on the same resampled photos (paired), so the noise the
photos share cancels in a difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class PerPhoto:
    """One row's numbers per photo (the same photos, in the same order, for every row compared): sums and counts,
    so that a mean over any resample of photos is a ratio of sums."""

    sums: np.ndarray  # (photos,) sum of the measure over the photo's edits (or inversions)
    counts: np.ndarray  # (photos,) how many edits (or inversions) the sums hold

    def mean(self) -> float:
        return float(self.sums.sum() / max(self.counts.sum(), 1))


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap interval."""

    value: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0.0 or self.high < 0.0

    def __format__(self, spec: str) -> str:
        """``value [low, high]``, each formatted with ``spec`` (default ``.3f``; ``+`` alone: ``+.3f``)."""
        spec = {"": ".3f", "+": "+.3f"}.get(spec, spec)
        return f"{self.value:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"

    def __str__(self) -> str:
        return format(self)


def resamples(photos: int, seed: int = 0, count: int = RESAMPLES) -> np.ndarray:
    """Photo indices (count, photos), drawn with replacement; the same draws serve every row and difference."""
    return np.random.default_rng(seed).integers(photos, size=(count, photos))


def resampled_means(x: PerPhoto, draws: np.ndarray) -> np.ndarray:
    """The row's mean on each resample: (count,)."""
    return x.sums[draws].sum(1) / np.maximum(x.counts[draws].sum(1), 1)


def interval(point: float, samples: np.ndarray) -> Interval:
    """``point`` with the percentile interval of ``samples`` at ``LEVEL``."""
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.nanpercentile(samples, [tail, 100 - tail])
    return Interval(point, float(low), float(high))


def mean_interval(x: PerPhoto, draws: np.ndarray) -> Interval:
    return interval(x.mean(), resampled_means(x, draws))


def difference(x: PerPhoto, reference: PerPhoto, draws: np.ndarray) -> Interval:
    """``mean(x) - mean(reference)`` with its paired interval."""
    return interval(x.mean() - reference.mean(), resampled_means(x, draws) - resampled_means(reference, draws))


def product_interval(a: PerPhoto, b: PerPhoto, draws: np.ndarray) -> Interval:
    """``mean(a) * mean(b)`` (e.g. success times preservation) with its interval."""
    return interval(a.mean() * b.mean(), resampled_means(a, draws) * resampled_means(b, draws))
