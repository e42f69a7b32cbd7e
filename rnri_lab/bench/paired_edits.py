"""Paired comparisons of two benchmark rows on the same edits: the mean difference with a bootstrap interval.

Edits of one photo share its inversion, so they are not independent: the bootstrap resamples photos (clusters),
each with all its edits (Efron and Tibshirani 1993, ch. 16; the cluster bootstrap), and reads the 2.5th and 97.5th
percentiles of the resampled means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000


@dataclass(frozen=True)
class PairedDifference:
    """``b - a`` over paired edits: its mean, a 95% bootstrap interval, and how often b is above, level or below."""

    mean: float
    low: float  # 2.5th percentile of the resampled means
    high: float  # 97.5th percentile
    better: int  # edits where b - a > 0
    same: int
    worse: int

    def __str__(self) -> str:
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}] ({self.better} up, {self.worse} down)"


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, photos: np.ndarray, resamples: int = RESAMPLES, seed: int = 0
) -> PairedDifference:
    """The mean of ``b - a`` over edits (each of shape (n,), ``photos`` the photo of each edit), with a 95% interval
    from resampling photos with replacement; a seeded generator, so the same inputs give the same interval."""
    a, b, photos = np.asarray(a, dtype=float), np.asarray(b, dtype=float), np.asarray(photos)
    if not (a.shape == b.shape == photos.shape and a.ndim == 1 and len(a)):
        shapes = f"{np.shape(a)}, {np.shape(b)}, {photos.shape}"
        raise ValueError(f"a, b and photos must be 1-d of one length, got {shapes}")
    delta = b - a
    ids, index = np.unique(photos, return_inverse=True)
    sums, counts = np.bincount(index, weights=delta), np.bincount(index)
    draws = np.random.default_rng(seed).integers(len(ids), size=(resamples, len(ids)))  # photos drawn per resample
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return PairedDifference(
        float(delta.mean()),
        float(low),
        float(high),
        int((delta > 0).sum()),
        int((delta == 0).sum()),
        int((delta < 0).sum()),
    )
