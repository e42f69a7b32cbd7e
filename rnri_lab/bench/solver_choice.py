"""The pre-registered solver comparison of docs/solver-choice.md: ``python -m rnri_lab.bench.solver_choice``.

Three stages on the shapes models (ShapeEdit, ``rnri_lab.bench.shapes``): **selection** (the student, the selection
split of scenes: every method at 1, 2 and 4 iterations, with and without noise correction, at each strength; the
iteration count of each method is chosen here, and these runs draw the reconstruction-against-cost curves),
**report** (the student on the report split with both noise seeds, the chosen settings; paired bootstrap intervals
against DDIM + noise correction, and the decision the protocol's rule makes), and **teacher** (the DDIM teacher on
the report split at inversion guidance 1, 3 and 7.5). Writes ``solver-choice.md`` (tables, decision),
``solver-choice.json`` (every number) and ``solver-choice.png`` (the curves) to ``--out``.

Every finished (model, split, noise seed, row) is kept under ``--out/raw`` and not run again, so an interrupted run
resumes where it stopped; delete the folder (or pass another ``--out``) after the models change.

Why one module of ~490 lines: the pre-registered comparison (rule, grids, selection split, report split) is
read as one protocol.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import rnri
from rnri.core.settings import preset
from rnri_lab.bench import machine
from rnri_lab.bench.paired import PerPhoto, difference, mean_interval, product_interval, resamples
from rnri_lab.bench.shapes import BACKWARD_COST, EditRow, PhotoRow, Variant, run

ITERATIVE = ("fixed-point", "rnri-jf", "gnri", "rnri", "quasi-newton")  # methods with an iteration count
STUDENT, TEACHER = "tiny", "tiny-teacher"
COLOURS = {  # one per method in the curves; dashed with open markers: with noise correction
    "ddim": "black",
    "fixed-point": "tab:green",
    "rnri-jf": "tab:purple",
    "gnri": "tab:red",
    "rnri": "tab:blue",
    "quasi-newton": "tab:orange",
}


@dataclass(frozen=True)
class Protocol:
    """The sizes and seeds of a run (docs/solver-choice.md, "Protocol")."""

    photos: int = 48  # ShapeEdit photos of the report split (the student)
    selection_photos: int = 24  # of the selection split
    selection_seed: int = 1  # scene seed of the selection split
    report_seed: int = 2  # scene seed of the report split, never looked at before the selection is fixed
    noise_seeds: tuple[int, ...] = (0, 1)  # the chain's fixed noises (rnri.invert's seed): the report uses all,
    # the selection the first
    iterations: tuple[int, ...] = (1, 2, 4)  # each iterative method's settings in the selection (the curves)
    strengths: tuple[float, ...] = (1.0, 0.5)
    teacher_photos: int = 32  # the first 32 photos of the report split
    teacher_strength: float = 0.5  # the teacher inverts the last 25 of its 50 steps
    teacher_guidances: tuple[float, ...] = (1.0, 3.0, 7.5)  # of its inversion (and reconstruction); edits at 7.5
    teacher_edits_per_photo: int = 1  # one edit per photo, taken in turn, so every kind keeps its share


QUICK = Protocol(
    photos=4,
    selection_photos=4,
    noise_seeds=(0,),
    iterations=(1, 2),
    strengths=(1.0,),
    teacher_photos=2,
    teacher_guidances=(1.0, 7.5),
)


def label(method: str, iterations: int | None, correction: bool, strength: float, guidance: float | None) -> str:
    """A row's name, e.g. ``quasi-newton x2 + correction, strength 0.5``."""
    name = method if iterations is None else f"{method} x{iterations}"
    name += " + correction" if correction else ""
    name += f", strength {strength:g}" if strength != 1.0 else ""
    return name + (f", inversion at {guidance:g}" if guidance is not None else "")


def variant(
    method: str, iterations: int | None, correction: bool, strength: float, guidance: float | None = None
) -> Variant:
    options = {} if iterations is None else {"iterations": iterations}
    name = label(method, iterations, correction, strength, guidance)
    return Variant(name, method, options, correction, strength=strength, inversion_guidance=guidance)


def selection_rows(protocol: Protocol, strength: float) -> list[Variant]:
    """DDIM with and without correction, and every iterative method at every iteration count, with and without."""
    rows = [variant("ddim", None, c, strength) for c in (False, True)]
    return rows + [variant(m, k, c, strength) for m in ITERATIVE for c in (False, True) for k in protocol.iterations]


def report_rows(choice: dict[str, int], strength: float, guidance: float | None = None) -> list[Variant]:
    """DDIM with and without correction, and every iterative method at its chosen iteration count, with and
    without (``choice``: key ``method|correction|strength`` -> iterations)."""
    rows = [variant("ddim", None, c, strength, guidance) for c in (False, True)]
    return rows + [
        variant(m, choice[key(m, c, strength)], c, strength, guidance) for m in ITERATIVE for c in (False, True)
    ]


# Settings the paper and its official code run (rnri.core.settings.PRESETS), reported whatever the selection.
PRESETS = {
    "the paper's setting (Eq. 9-10, 2 iterations, noise fixed by the seed)": "paper",
    "the official code's setting (its update, 2 iterations, noise fixed by the seed, strength 0.5)": "official-code",
}


def preset_row(name: str) -> tuple[str, int, bool, float]:
    """(method, iterations, noise correction, strength) of a preset of ``rnri.core.settings``."""
    settings = preset(name)
    return settings.method, settings.solver.iterations, bool(settings.noise_correction), settings.strength


def key(method: str, correction: bool, strength: float) -> str:
    return f"{method}|{correction}|{strength:g}"


def teacher_rows(choice: dict[str, int], protocol: Protocol, guidance: float) -> list[Variant]:
    """At one inversion guidance: the report rows without correction, and DDIM and quasi-newton with it (the teacher's
    chain is deterministic: correction stores the eps it used, at one more forward per step). Iteration counts are
    the student's at the teacher's strength (at strength 1 where the selection did not run that one)."""
    s = protocol.teacher_strength
    chosen = s if key("rnri", False, s) in choice else 1.0

    def k(method: str, correction: bool) -> int:
        return choice[key(method, correction, chosen)]

    rows = [variant("ddim", None, c, s, guidance) for c in (False, True)]
    rows += [variant(m, k(m, False), False, s, guidance) for m in ITERATIVE]
    return rows + [variant("quasi-newton", k("quasi-newton", True), True, s, guidance)]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass
class Results:
    """Every photo and edit row of one (model, split), by row label."""

    photos: dict[str, list[PhotoRow]]
    edits: dict[str, list[EditRow]]


class Runner:
    """Runs rows on a model and split, one noise seed at a time, keeping each finished row on disk."""

    def __init__(self, out: Path, bar: tqdm) -> None:
        self.raw, self.bar, self.pipes = out / "raw", bar, {}
        self.raw.mkdir(parents=True, exist_ok=True)

    def pipe(self, model: str) -> Any:
        if model not in self.pipes:
            self.pipes[model] = rnri.load_pipeline(model, device="cpu")
            self.pipes[model].set_progress_bar_config(disable=True)
        return self.pipes[model]

    def run(self, model: str, rows: list[Variant], photos: int, seed: int, noise_seeds: tuple[int, ...], **kw):
        """Each row on each noise seed (read back where already run); Results of all of them."""
        results = Results({}, {})
        for row in rows:
            for noise in noise_seeds:
                photo_rows, edit_rows = self.one(model, row, photos, seed, noise, **kw)
                results.photos.setdefault(row.label, []).extend(photo_rows)
                results.edits.setdefault(row.label, []).extend(edit_rows)
        return results

    def one(self, model: str, row: Variant, photos: int, seed: int, noise: int, edits_per_photo=None):
        path = self.raw / f"{model}-scenes{seed}-{photos}-noise{noise}-{slug(row.label)}.json"
        if path.exists():
            data = json.loads(path.read_text())
            self.bar.update(photos)
            return [PhotoRow(**r) for r in data["photos"]], [EditRow(**r) for r in data["edits"]]
        pipe = self.pipe(model)
        guidance = rnri.default_guidance(pipe, edit=True)
        photo_rows, edit_rows = run(
            pipe, [row], photos, seed, guidance, rnri.default_guidance(pipe), noise, edits_per_photo, self.bar
        )
        record = {"photos": [asdict(r) for r in photo_rows], "edits": [asdict(r) for r in edit_rows]}
        path.write_text(json.dumps(record))
        return photo_rows, edit_rows


def per_photo(rows: list, value: str, photos: int) -> PerPhoto:
    """Sums and counts of ``value`` per photo index (over edits or inversions, and over noise seeds)."""
    sums, counts = np.zeros(photos), np.zeros(photos)
    for r in rows:
        v = float(getattr(r, value)) if value != "fwd_eq" else r.forwards + BACKWARD_COST * r.backwards
        if value.endswith("psnr"):
            v = min(v, 60.0)  # an identical picture (inf dB) counts as 60 dB
        if math.isfinite(v):
            sums[r.photo] += v
            counts[r.photo] += 1
    return PerPhoto(sums, counts)


@dataclass
class Summary:
    """One row's numbers: means with 95% intervals (bootstrap over photos), cost and z_T."""

    row: Variant
    success: PerPhoto
    preservation: PerPhoto
    reconstruction: PerPhoto
    ceiling: float  # dB, the VAE's own encode-decode of the same photos
    fwd_eq: float  # UNet forward-equivalents per inversion (a backward counted as BACKWARD_COST forwards)
    zT_std: float
    fallbacks: float  # steps per inversion where the guard took DDIM's guess
    edits: int

    @property
    def name(self) -> str:
        return self.row.label

    def score(self) -> float:
        """Success x preservation."""
        return self.success.mean() * self.preservation.mean()


def summarize(results: Results, rows: list[Variant], photos: int) -> list[Summary]:
    table = []
    for row in rows:
        edits, inversions = results.edits[row.label], results.photos[row.label]
        table.append(
            Summary(
                row,
                per_photo(edits, "success", photos),
                per_photo(edits, "preservation", photos),
                per_photo(inversions, "reconstruction_psnr", photos),
                per_photo(inversions, "ceiling_psnr", photos).mean(),
                per_photo(inversions, "fwd_eq", photos).mean(),
                float(np.mean([r.zT_std for r in inversions])),
                float(np.mean([r.fallback_steps for r in inversions])),
                len(edits),
            )
        )
    return table


def choose(selection: list[Summary], protocol: Protocol) -> dict[str, int]:
    """Per method, correction and strength: the iteration count with the highest success x preservation on the
    selection split; a tie goes to the cheaper."""
    by_label = {r.name: r for r in selection}
    choice = {}
    for s in protocol.strengths:
        for m in ITERATIVE:
            for c in (False, True):
                rows = [(by_label[label(m, k, c, s, None)], k) for k in protocol.iterations]
                best = max(rows, key=lambda rk: (round(rk[0].score(), 9), -rk[0].fwd_eq))
                choice[key(m, c, s)] = best[1]
    return choice


def worse(row: Summary, than: Summary, draws: np.ndarray) -> bool:
    """Whether ``row`` is worse than ``than`` in success or in preservation by a paired 95% interval."""
    return any(difference(getattr(row, m), getattr(than, m), draws).high < 0.0 for m in ("success", "preservation"))


def decide(candidates: list[Summary], photos: int) -> tuple[Summary, list[Summary], Summary]:
    """The protocol's rule: the leader has the highest success x preservation; the rows not worse than it in success
    or preservation by a paired interval are tied with it; the cheapest tied row wins (then the higher score).
    Returns (winner, tied rows, leader)."""
    draws = resamples(photos)
    leader = max(candidates, key=Summary.score)
    tied = [r for r in candidates if r is leader or not worse(r, leader, draws)]
    return min(tied, key=lambda r: (r.fwd_eq, -r.score())), tied, leader


def table(rows: list[Summary], photos: int, reference: Summary | None) -> str:
    """A Markdown table: intervals, paired differences from ``reference``, reconstruction, cost."""
    draws = resamples(photos)
    lines = [
        "| row | success | preservation | success x preservation | Δ success | Δ preservation | recon PSNR (dB) | "
        "fwd-eq | z_T std | guard |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d_s = d_p = "ref" if r is reference else ""
        if reference is not None and r is not reference:
            d_s = f"{difference(r.success, reference.success, draws):+}"
            d_p = f"{difference(r.preservation, reference.preservation, draws):+}"
        lines.append(
            f"| {r.name} | {mean_interval(r.success, draws)} | {mean_interval(r.preservation, draws)} | "
            f"{product_interval(r.success, r.preservation, draws)} | {d_s} | {d_p} | "
            f"{mean_interval(r.reconstruction, draws):.1f} | {r.fwd_eq:.1f} | {r.zT_std:.2f} | {r.fallbacks:.2f} |"
        )
    return "\n".join(lines)


def curves_plot(selection: dict[float, list[Summary]], teacher: dict[float, list[Summary]], path: Path) -> None:
    """Reconstruction PSNR against forward-equivalents per inversion: the student's selection runs (a curve per
    method and correction through its iteration counts), and the teacher's rows per inversion guidance."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(f"student, selection split, strength {s:g}", rows) for s, rows in selection.items()]
    panels += [(f"teacher, report split, inversion at {g:g}", rows) for g, rows in teacher.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    for ax, (title, rows) in zip(axes[0], panels):
        groups: dict[tuple[str, bool], list[Summary]] = {}
        for r in rows:
            groups.setdefault((r.row.method, bool(r.row.noise_correction)), []).append(r)
        for (method, corrected), members in groups.items():
            members.sort(key=lambda r: r.fwd_eq)
            xs, ys = [r.fwd_eq for r in members], [r.reconstruction.mean() for r in members]
            ax.plot(
                xs, ys, marker="o", color=COLOURS[method], linestyle="--" if corrected else "-",
                markerfacecolor="white" if corrected else COLOURS[method], markersize=5,
                label=method + (" + correction" if corrected else ""),
            )  # fmt: skip
        ceiling = float(np.mean([r.ceiling for r in rows]))
        ax.axhline(ceiling, color="grey", linewidth=0.8)
        ax.annotate("VAE ceiling", (ax.get_xlim()[0], ceiling), fontsize=7, va="bottom")
        ax.set(title=title, xlabel="UNet forward-equivalents per inversion", ylabel="reconstruction PSNR (dB)")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def record(summaries: list[Summary], photos: int) -> list[dict[str, Any]]:
    """The JSON form of a table: every row's settings, means and intervals."""
    draws = resamples(photos)
    out = []
    for r in summaries:
        entry = {"row": r.name, **{k: v for k, v in asdict(r.row).items() if k in ("method", "options", "strength")}}
        entry["noise_correction"] = r.row.noise_correction
        for measure in ("success", "preservation", "reconstruction"):
            i = mean_interval(getattr(r, measure), draws)
            entry[measure] = {"mean": i.value, "low": i.low, "high": i.high}
        entry |= {"ceiling": r.ceiling, "fwd_eq": r.fwd_eq, "zT_std": r.zT_std, "fallbacks": r.fallbacks}
        out.append(entry | {"edits": r.edits})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m rnri_lab.bench.solver_choice", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="4 photos, 1 noise seed, iterations 1 and 2 (minutes)")
    parser.add_argument("--selection-seed", type=int, help="scene seed of the selection split (default: 1)")
    parser.add_argument("--report-seed", type=int, help="scene seed of the report split (default: 2)")
    parser.add_argument("--no-teacher", action="store_true", help="the student's stages only")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared machine)")
    parser.add_argument("--out", type=Path, default=Path("bench-out/solver-choice"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    protocol = QUICK if args.quick else Protocol()
    seeds = {k: v for k, v in (("selection_seed", args.selection_seed), ("report_seed", args.report_seed)) if v}
    protocol = dataclasses.replace(protocol, **seeds)
    start = time.perf_counter()
    text, data = compare(protocol, args.out, teacher=not args.no_teacher)
    command = " ".join(["python -m rnri_lab.bench.solver_choice", *(sys.argv[1:] if argv is None else argv)])
    text += (
        f"\n\n`{command}`: {time.perf_counter() - start:.0f} s wall, {time.process_time():.0f} s CPU, on "
        f"{machine()}, torch {torch.__version__}, {datetime.date.today()}.\n"
    )
    (args.out / "solver-choice.md").write_text(text)
    (args.out / "solver-choice.json").write_text(json.dumps(data, indent=1))
    print(text)


def units(protocol: Protocol, teacher: bool) -> int:
    """Inversions the whole run makes (the progress bar's length)."""
    per_strength = 2 + 2 * len(ITERATIVE) * len(protocol.iterations)
    selection = len(protocol.strengths) * per_strength * protocol.selection_photos
    report = (len(protocol.strengths) * (2 + 2 * len(ITERATIVE)) + len(PRESETS)) * protocol.photos
    report *= len(protocol.noise_seeds)
    rows_per_guidance = 3 + len(ITERATIVE)
    return selection + report + teacher * rows_per_guidance * len(protocol.teacher_guidances) * protocol.teacher_photos


def compare(protocol: Protocol, out: Path, teacher: bool = True) -> tuple[str, dict[str, Any]]:
    """Run the three stages (resuming from ``out/raw``); the Markdown report and the JSON record."""
    bar = tqdm(total=units(protocol, teacher), desc="solver comparison", unit="inversion", smoothing=0.02)
    runner = Runner(out, bar)
    selection = {}
    for s in protocol.strengths:
        rows = selection_rows(protocol, s)
        done = runner.run(STUDENT, rows, protocol.selection_photos, protocol.selection_seed, protocol.noise_seeds[:1])
        selection[s] = summarize(done, rows, protocol.selection_photos)
    choice = choose([r for rows in selection.values() for r in rows], protocol)
    report = {}
    for s in protocol.strengths:
        published = [preset_row(name) for name in PRESETS.values()]
        rows = report_rows(choice, s) + [variant(*p) for p in published if p[3] == s]
        rows = list({r.label: dataclasses.replace(r, label=preset_label(r)) for r in rows}.values())
        done = runner.run(STUDENT, rows, protocol.photos, protocol.report_seed, protocol.noise_seeds)
        report[s] = summarize(done, rows, protocol.photos)
    teacher_tables = {}
    for g in protocol.teacher_guidances if teacher else ():
        rows = teacher_rows(choice, protocol, g)
        done = runner.run(
            TEACHER, rows, protocol.teacher_photos, protocol.report_seed, protocol.noise_seeds[:1],
            edits_per_photo=protocol.teacher_edits_per_photo,
        )  # fmt: skip
        teacher_tables[g] = summarize(done, rows, protocol.teacher_photos)
    bar.close()
    curves_plot(selection, teacher_tables, out / "solver-choice.png")
    return render(protocol, selection, choice, report, teacher_tables)


def preset_label(row: Variant) -> str:
    """The row's label, with the setting it reproduces named where it is one of PRESETS."""
    for name, published in PRESETS.items():
        m, k, c, s = preset_row(published)
        if (row.method, row.options.get("iterations"), row.noise_correction, row.strength) == (m, k, c, s):
            return f"{label(m, k, c, s, None)}: {name}"
    return row.label


def render(
    protocol: Protocol,
    selection: dict[float, list[Summary]],
    choice: dict[str, int],
    report: dict[float, list[Summary]],
    teacher: dict[float, list[Summary]],
) -> tuple[str, dict[str, Any]]:
    """The Markdown tables and the decision; and the JSON record of every table."""
    p, sp, tp = protocol.photos, protocol.selection_photos, protocol.teacher_photos
    parts, data = [], {"protocol": asdict(protocol), "choice": choice}
    for s, rows in selection.items():
        parts += [f"### Selection split (scene seed {protocol.selection_seed}), student, strength {s:g}", ""]
        parts += [table(rows, sp, reference(rows)), ""]
        data[f"selection {s:g}"] = record(rows, sp)
    chosen = ", ".join(f"{k.replace('|', ' ')}: x{v}" for k, v in choice.items())
    parts += [f"Chosen iteration counts (method, noise correction, strength): {chosen}.", ""]
    for s, rows in report.items():
        seeds = ", ".join(map(str, protocol.noise_seeds))
        title = f"Report split (scene seed {protocol.report_seed}, noise seeds {seeds}), student, strength {s:g}"
        parts += [f"### {title}", "", table(rows, p, reference(rows)), ""]
        data[f"report {s:g}"] = record(rows, p)
    for g, rows in teacher.items():
        parts += [f"### Teacher, report split, strength {protocol.teacher_strength:g}, inversion at guidance {g:g}"]
        parts += ["", table(rows, tp, reference(rows)), ""]
        data[f"teacher {g:g}"] = record(rows, tp)
    candidates = [r for r in report.get(1.0, [])]
    if candidates:
        winner, tied, leader = decide(candidates, p)
        parts += [decision_text(winner, tied, leader), "", aim_text(candidates)]
        data["decision"] = {"winner": winner.name, "tied": [r.name for r in tied], "leader": leader.name}
    return "\n".join(parts), data


def reference(rows: list[Summary]) -> Summary | None:
    """The row every other is compared with: DDIM + noise correction (issue 19: the cheapest good row)."""
    return next((r for r in rows if r.row.method == "ddim" and r.row.noise_correction), None)


def decision_text(winner: Summary, tied: list[Summary], leader: Summary) -> str:
    ceiling = winner.ceiling
    return (
        f"**Decision (the protocol's rule, student, report split, strength 1).** Leader by success x preservation: "
        f"{leader.name} ({leader.score():.3f}). Not worse than it in success or preservation by a paired 95% "
        f"interval: {', '.join(r.name for r in tied)}. The cheapest of these, the default: **{winner.name}** "
        f"({winner.fwd_eq:.1f} forward-equivalents per inversion, reconstruction {winner.reconstruction.mean():.1f} "
        f"dB against the VAE's {ceiling:.1f} dB)."
    )


def aim_text(rows: list[Summary]) -> str:
    """Issue 19's aim: a row within 0.5 dB of the VAE ceiling whose success x preservation is above every other
    row's, at 10 forward-equivalents or fewer."""
    best = max(rows, key=Summary.score)
    close = [r for r in rows if r.reconstruction.mean() >= r.ceiling - 0.5]
    met = best in close and best.fwd_eq <= 10
    return (
        f"**Aim** (reconstruction within 0.5 dB of the VAE ceiling, success x preservation above every other row, at "
        f"10 forward-equivalents or fewer): {'met by ' + best.name if met else 'not met'}. Highest success x "
        f"preservation: {best.name} ({best.score():.3f}, {best.fwd_eq:.1f} forward-equivalents, reconstruction "
        f"{best.reconstruction.mean():.1f} dB); within 0.5 dB of the ceiling: "
        f"{', '.join(f'{r.name} ({r.fwd_eq:.1f})' for r in close) or 'no row'}."
    )


if __name__ == "__main__":
    main()
