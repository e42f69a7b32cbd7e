"""Writing bench results: JSON with everything, and Markdown tables a reader can scan."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rnri_lab.bench.runner import CellResult

TIMED_MODEL = "tiny-lcm"  # the model whose wall time and memory the tables show: the only real network in the grid


def _fmt(value: float, digits: int = 4) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def geometric_mean(values: Iterable[float]) -> float:
    """Geometric mean of the finite, positive values (NaN when there are none)."""
    logs = [math.log(v) for v in values if math.isfinite(v) and v > 0]
    return math.exp(statistics.fmean(logs)) if logs else math.nan


def write_json(path: Path, results: list[CellResult], meta: dict[str, Any]) -> None:
    """Every cell, plus the run's metadata (machine, versions, command, configuration)."""
    path.write_text(json.dumps({"meta": meta, "cells": [r.as_dict() for r in results]}, indent=1, default=str))


def _columns(results: list[CellResult]) -> list[tuple[str, str]]:
    seen: dict[tuple[str, str], None] = {}
    for r in results:
        seen[(r.model, r.case)] = None
    return list(seen)


def chain_table(results: list[CellResult], chain: str) -> str:
    """One chain's table: a row per method, a column per (model, case): reconstruction error / z_T std."""
    rows = [r for r in results if r.chain == chain]
    columns = _columns(rows)
    header = "| method | fwd+bwd | fwd-eq | ms | MiB | " + " | ".join(f"{m} {c}" for m, c in columns) + " |"
    lines = [header, "|---" * (5 + len(columns)) + "|"]
    for label in dict.fromkeys(r.label for r in rows):
        cells = {(r.model, r.case): r for r in rows if r.label == label}
        timed = next((r for r in cells.values() if r.model == TIMED_MODEL), next(iter(cells.values())))
        values = [cells.get(c) for c in columns]
        text = [
            f"{_fmt(v.reconstruction)} / {_fmt(v.zT_std, 2)}" + (" !" if v.failures else "") if v else ""
            for v in values
        ]
        lines.append(
            f"| {label} | {timed.forwards:.0f}+{timed.backwards:.0f} | {timed.forward_equivalents:.0f} | "
            f"{_fmt(timed.wall_s * 1000, 1)} | {_fmt(timed.peak_mib, 1)} | " + " | ".join(text) + " |"
        )
    return "\n".join(lines)


def pareto_table(results: list[CellResult], chain: str) -> str:
    """Methods on the error-versus-cost front of one chain (geometric mean error over its cells), cheapest first."""
    rows = [r for r in results if r.chain == chain]
    summary = []
    for label in dict.fromkeys(r.label for r in rows):
        cells = [r for r in rows if r.label == label]
        cost = statistics.fmean(r.forward_equivalents for r in cells)
        summary.append(
            (cost, geometric_mean(r.reconstruction for r in cells), label, geometric_mean(r.zT_std for r in cells))
        )
    summary.sort(key=lambda s: (s[0], s[1]))
    lines = ["| fwd-eq | geo-mean reconstruction | geo-mean z_T std | method on the front |", "|---|---|---|---|"]
    best = math.inf
    for cost, error, label, std in summary:
        if math.isfinite(error) and error < best:
            best = error
            lines.append(f"| {cost:.0f} | {error:.4f} | {std:.2f} | {label} |")
    return "\n".join(lines)


def markdown(results: list[CellResult], meta: dict[str, Any]) -> str:
    """The whole report: per chain, the Pareto front and the full table."""
    parts = [
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; torch {meta['torch']}, diffusers {meta['diffusers']}; {meta['date']}.  ",
        f"{meta['samples']} samples per cell. Cost: UNet forwards + backwards counted by hooks; fwd-eq = forwards + "
        f"{meta['backward_cost']:g} x backwards; ms and MiB: wall time and peak memory growth of one inversion on "
        f"`{TIMED_MODEL}` (CPU: noisy at this size). Cells: reconstruction error "
        "`||regenerate(invert(z0)) - z0|| / ||z0||` / std of z_T (1 is in distribution); `!` marks failures.",
    ]
    for chain in dict.fromkeys(r.chain for r in results):
        parts += [f"\n### Chain `{chain}`\n", pareto_table(results, chain), "", chain_table(results, chain)]
    return "\n".join(parts) + "\n"
