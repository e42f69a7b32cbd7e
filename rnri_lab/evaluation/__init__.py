"""``rnri eval``: reconstruction quality over captioned images (COCO layout), and PIE-Bench editing metrics.

``reconstruct --captions captions.json --images DIR``: invert each image under its caption and regenerate it;
PSNR, SSIM (and LPIPS where its weights are here) against the original, with the VAE round trip as the ceiling.
``piebench --root DIR``: PIE-Bench's layout (``mapping_file.json``, ``annotation_images/``); edit every case and
compute its metrics. Writes ``eval.json`` and ``eval.md``; metrics whose models cannot be loaded are listed, by name
and reason, under ``skipped``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import rnri
from rnri.core.options import add_arguments, settings_of
from rnri.core.settings import InversionSettings, read_method
from rnri.pipelines.backbones import guidance_defaults
from rnri_lab.evaluation.datasets import coco_captions, mask_decode, mask_encode, pie_bench_cases
from rnri_lab.evaluation.metrics import MetricConfig, load_metric_models
from rnri_lab.evaluation.runs import MethodRun, pie_bench, reconstruct, summarize, summary_table

__all__ = ["MethodRun", "main", "mask_decode", "mask_encode", "parse_method"]


def parse_method(text: str) -> MethodRun:
    """``name`` or ``name:KEY=VALUE,KEY=VALUE``: the one option syntax, each value typed and checked by its field."""
    try:
        return MethodRun(*read_method(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default=rnri.DEFAULT_MODEL, help="Hub id, local folder, or 'tiny'")
    common.add_argument("--method", type=parse_method, action="append", help="NAME[:KEY=VALUE,...] (repeatable)")
    shared = {
        k: v for k, v in settings_of(InversionSettings).items() if k in ("num_inference_steps", "guidance_scale")
    }
    add_arguments(common, shared, {"guidance_scale": f"the model's: {guidance_defaults()}"})
    common.add_argument("--limit", type=int, help="evaluate only the first N images")
    common.add_argument("--out", type=Path, default=Path("eval-out"), help="output folder")
    common.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    common.add_argument("--lpips-net", default="squeeze", choices=("squeeze", "alex", "vgg"))
    p = argparse.ArgumentParser(prog="rnri eval", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="task", required=True)
    rec = sub.add_parser("reconstruct", parents=[common], help="reconstruction over a COCO-style captioned folder")
    rec.add_argument("--captions", type=Path, required=True, help="COCO captions JSON (images, annotations)")
    rec.add_argument("--images", type=Path, required=True, help="folder holding the images' file_name paths")
    pie = sub.add_parser("piebench", parents=[common], help="PIE-Bench editing metrics")
    pie.add_argument("--root", type=Path, required=True, help="folder with mapping_file.json and annotation_images/")
    pie.add_argument("--categories", nargs="+", help="editing_type_id values to run (default: all)")
    pie.add_argument("--clip-model", default=MetricConfig.clip_model, help="CLIP for the CLIP score (local only)")
    pie.add_argument("--dino-model", default=MetricConfig.dino_model, help="DINO ViT for structure distance")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run an evaluation with command-line arguments ``argv``; write eval.json and eval.md; 0 on success."""
    args = _parser().parse_args(argv)

    def progress(message: str) -> None:
        print(f"[eval] {message}", file=sys.stderr, flush=True)

    try:
        pipe = rnri.load_pipeline(args.model, device=args.device)
    except rnri.ModelLoadError as error:
        print(error, file=sys.stderr)
        return 2
    runs = args.method or [MethodRun("ddim"), MethodRun("rnri")]
    settings = InversionSettings(num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale)
    metric_config = MetricConfig(
        lpips_net=args.lpips_net,
        device=str(pipe.device),
        **({"clip_model": args.clip_model, "dino_model": args.dino_model} if args.task == "piebench" else {}),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    if args.task == "reconstruct":
        models = load_metric_models(metric_config, ("lpips",))
        items = coco_captions(args.captions, args.images)[: args.limit]
        rows = reconstruct(pipe, items, runs, models, settings, progress)
    else:
        models = load_metric_models(metric_config, ("lpips", "clip", "structure_distance"))
        cases = pie_bench_cases(args.root, tuple(args.categories) if args.categories else None)[: args.limit]
        rows = pie_bench(pipe, args.root, cases, runs, models, settings, args.out, progress)
    for metric, why in models.skipped.items():
        progress(f"skipped {metric}: {why}")
    summary = summarize(rows)
    report = {
        "task": args.task,
        "model": args.model,
        "settings": dataclasses.asdict(settings),
        "skipped": models.skipped,
        "summary": summary,
        "rows": rows,
    }
    (args.out / "eval.json").write_text(json.dumps(report, indent=1))
    skipped = "".join(f"\n- skipped `{m}`: {why}" for m, why in models.skipped.items())
    (args.out / "eval.md").write_text(
        f"`rnri eval {args.task}` on `{args.model}`\n\n{summary_table(summary)}\n{skipped}\n"
    )
    progress(f"wrote eval.json and eval.md to {args.out}")
    return 0
