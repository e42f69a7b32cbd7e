"""``python -m rnri_lab.bench``: accuracy, cost and memory of every inversion method, on every test model and chain.

Writes ``bench.json`` (everything), ``bench.md`` (tables) and ``bench.png`` (error against cost, one curve per
method) to the output folder, and with the real-size measurement ``realsize.json`` and ``realsize.md``. Like
``rnri_lab/testbeds.py`` it is a measuring instrument, so it drives the math layer's chains directly: the public API
does not expose the uniform DDIM chain on which diffusers' own inversion (the peer baseline) runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import diffusers
import torch

from rnri.pipelines.loading import ModelLoadError
from rnri_lab.bench.grid import QUICK, BenchConfig, method_grid, with_overrides
from rnri_lab.bench.models import CHAINS, make_model
from rnri_lab.bench.plot import plot
from rnri_lab.bench.realsize import RealSizeConfig, real_size_table, run_real_size
from rnri_lab.bench.report import markdown, write_json
from rnri_lab.bench.runner import CellResult, run_cell

__all__ = ["BenchConfig", "main", "run_grid"]


def machine() -> str:
    """The CPU (model, cores, memory) this process runs on, in words."""
    name = platform.processor() or platform.machine()
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        name = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name"))
        kib = next(
            int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line
        )
        return f"{name}, {torch.get_num_threads()} threads, {kib / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        return f"{name}, {torch.get_num_threads()} threads"


def run_grid(config: BenchConfig, progress=lambda _: None) -> tuple[list[CellResult], dict[str, str]]:
    """Every (model, chain, case, method) cell of ``config``; and the models skipped, with why."""
    results, skipped = [], {}
    models = list(config.models) + (["lcm"] if config.pipeline else [])
    for name in models:
        try:
            model = make_model(name, config.pipeline)
        except ModelLoadError as error:
            skipped[name] = str(error).splitlines()[0]
            progress(f"skipped model {name}: {skipped[name]}")
            continue
        for chain in config.chains:
            for case in config.cases:
                for spec in method_grid(config.budgets):
                    if chain in spec.chains:
                        results.append(
                            run_cell(
                                model,
                                chain,
                                case,
                                spec,
                                config.samples,
                                config.num_inference_steps,
                                config.backward_cost,
                            )
                        )
            progress(f"{name}: chain {chain} done")
    return results, skipped


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rnri bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 samples, budgets 1 and 2, no real-size run (minutes)")
    p.add_argument("--samples", type=int, help="clean latents per cell (default 8; --quick 2)")
    p.add_argument("--budgets", type=int, nargs="+", help="iterations per step of the iterative methods")
    p.add_argument("--models", nargs="+", help="isotropic, diagonal, subspace, tiny-lcm")
    p.add_argument("--chains", nargs="+", choices=CHAINS)
    p.add_argument("--pipeline", help="also bench this LCM pipeline (Hub id or folder) if its weights load")
    p.add_argument("--backward-cost", type=float, help="forward-equivalents of one backward pass (default 2)")
    p.add_argument("--out", type=Path, help="output folder (default bench-out/)")
    p.add_argument("--real-size", action=argparse.BooleanOptionalAction, help="real-size cost (default: full run)")
    p.add_argument("--real-size-only", action="store_true", help="skip the accuracy grid")
    p.add_argument("--device", default="cpu", help="device of the real-size run (cpu, cuda)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="real-size dtype (fp16 on CUDA)")
    p.add_argument("--repeats", type=int, default=2, help="real-size timings per single pass")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the bench with command-line arguments ``argv``; write its outputs; 0 on success."""
    args = _parser().parse_args(argv)
    config = with_overrides(
        QUICK if args.quick else BenchConfig(),
        samples=args.samples,
        budgets=tuple(args.budgets) if args.budgets else None,
        models=tuple(args.models) if args.models else None,
        chains=tuple(args.chains) if args.chains else None,
        pipeline=args.pipeline,
        backward_cost=args.backward_cost,
        real_size=args.real_size,
        out_dir=args.out,
    )
    config.out_dir.mkdir(parents=True, exist_ok=True)

    def progress(message: str) -> None:
        print(f"[bench] {message}", file=sys.stderr, flush=True)

    meta: dict[str, Any] = {
        "command": "python -m rnri_lab.bench " + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "date": datetime.date.today().isoformat(),
        **{k: str(v) if isinstance(v, Path) else v for k, v in vars(config).items()},
    }
    if not args.real_size_only:
        results, meta["skipped_models"] = run_grid(config, progress)
        write_json(config.out_dir / "bench.json", results, meta)
        (config.out_dir / "bench.md").write_text(markdown(results, meta))
        plot(results, config.out_dir / "bench.png", config.backward_cost)
        progress(f"wrote bench.json, bench.md, bench.png to {config.out_dir}")
    if config.real_size or args.real_size_only:
        cuda = torch.device(args.device).type == "cuda"
        real = RealSizeConfig(
            device=args.device, dtype=args.dtype or ("float16" if cuda else "float32"), repeats=args.repeats
        )
        result = run_real_size(real, progress) | {"machine": meta["machine"], "command": meta["command"]}
        (config.out_dir / "realsize.json").write_text(json.dumps(result, indent=1))
        (config.out_dir / "realsize.md").write_text(real_size_table(result) + "\n")
        progress(f"wrote realsize.json, realsize.md to {config.out_dir}")
    return 0
