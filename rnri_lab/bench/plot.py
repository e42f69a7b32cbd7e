"""The picture of the bench: reconstruction error against compute, one curve per method."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from rnri_lab.bench.report import geometric_mean  # noqa: E402
from rnri_lab.bench.runner import CellResult  # noqa: E402

SINGLE_POINT = {  # methods with one point, drawn so that a method with the same numbers does not hide them
    "ddim": {"marker": "s", "markersize": 11, "fillstyle": "none", "markeredgewidth": 2},
    "diffusers DDIMInverseScheduler": {"marker": "x", "markersize": 12, "markeredgewidth": 2.5},
}


def curves(results: list[CellResult], chain: str, case: str) -> dict[str, list[tuple[float, float]]]:
    """Per method family: (forward-equivalents, geometric-mean error over the models) at each budget, by cost."""
    points: dict[str, dict[str, list[CellResult]]] = {}
    for r in results:
        if r.chain == chain and r.case == case:
            points.setdefault(r.family, {}).setdefault(r.label, []).append(r)
    out = {}
    for family, labels in points.items():
        xy = [
            (cells[0].forward_equivalents, geometric_mean(c.reconstruction for c in cells))
            for cells in labels.values()
        ]
        out[family] = sorted(p for p in xy if math.isfinite(p[1]))
    return out


def plot(results: list[CellResult], path: Path, backward_cost: float) -> None:
    """A grid of panels (chains down, cases across), error against cost on log axes; saved as PNG."""
    chains = list(dict.fromkeys(r.chain for r in results))
    cases = list(dict.fromkeys(r.case for r in results))
    fig, axes = plt.subplots(len(chains), len(cases), figsize=(6 * len(cases), 3.6 * len(chains)), squeeze=False)
    families = list(dict.fromkeys(r.family for r in results))
    colours = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(families)}
    for row, chain in enumerate(chains):
        for col, case in enumerate(cases):
            ax = axes[row][col]
            for family, xy in curves(results, chain, case).items():
                if xy:
                    style = SINGLE_POINT.get(family, {"marker": "o", "markersize": 6})
                    width = 2.5 if family == "rnri" else 1.2
                    ax.plot(*zip(*xy), color=colours[family], label=family, lw=width, **style)
            ax.set(xscale="log", yscale="log", title=f"chain {chain}, {case} latents")
            ax.set_xlabel(f"UNet forward-equivalents per inversion (backward = {backward_cost:g} forwards)")
            ax.set_ylabel("reconstruction error (geo-mean over models)")
            ax.grid(True, which="both", alpha=0.3)
    handles = {h.get_label(): h for ax in axes.flat for h in ax.get_legend_handles_labels()[0]}
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(5, len(handles)), frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
