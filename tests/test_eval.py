"""`rnri eval`: COCO-style reconstruction and PIE-Bench runs on tiny data made here, and their metrics."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, ViTConfig, ViTModel

from rnri.pipelines.loading import tiny_tokenizer
from rnri_lab.evaluation import main, mask_decode, mask_encode, parse_method
from rnri_lab.evaluation.datasets import strip_brackets
from rnri_lab.evaluation.metrics import load_dino, pixel_metrics, structure_distance, to_tensor


def smooth_image(seed: int, size=(48, 40)) -> Image.Image:
    coarse = np.random.default_rng(seed).random((6, 6, 3))
    return Image.fromarray((coarse * 255).astype(np.uint8), "RGB").resize(size, Image.Resampling.BICUBIC)


@pytest.fixture(autouse=True)
def _no_lpips_weights(tmp_path, monkeypatch):
    """Point torch's cache at an empty folder, so LPIPS's backbone weights are missing on every machine."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def coco_folder(root: Path, n: int = 2) -> tuple[Path, Path]:
    (root / "val").mkdir(parents=True)
    images, notes = [], []
    for i in range(n):
        smooth_image(i).save(root / "val" / f"{i:012d}.png")
        images.append({"id": i + 7, "file_name": f"{i:012d}.png", "width": 48, "height": 40})
        notes += [
            {"id": 2 * i, "image_id": i + 7, "caption": f"picture number {i}"},
            {"id": 2 * i + 1, "image_id": i + 7, "caption": "a second caption"},
        ]
    captions = root / "captions_val.json"
    captions.write_text(json.dumps({"images": images, "annotations": notes}))
    return captions, root / "val"


def pie_folder(root: Path) -> Path:
    cases = {}
    for i, kind in enumerate(("0_random_140", "1_change_object_80/1_artificial/1_animal")):
        (root / "annotation_images" / kind).mkdir(parents=True)
        path = f"{kind}/{i:012d}.jpg"
        smooth_image(10 + i, (32, 32)).save(root / "annotation_images" / path)
        mask = np.zeros((32, 32))
        mask[8:20, 10:24] = 1
        cases[f"{i:012d}"] = {
            "image_path": path,
            "original_prompt": "a [cat] on a sofa",
            "editing_prompt": "a [tiger] on a sofa",
            "editing_instruction": "make it a tiger",
            "editing_type_id": str(i),
            "blended_word": "cat tiger",
            "mask": mask_encode(mask),
        }
    (root / "mapping_file.json").write_text(json.dumps(cases))
    return root


def tiny_clip(folder: Path) -> Path:
    tokenizer = tiny_tokenizer()
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 77,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def tiny_vit(folder: Path) -> Path:
    config = ViTConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
    )
    torch.manual_seed(0)
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


def test_mask_decode_reads_pie_bench_runs_and_sets_the_border():
    mask = mask_decode([10, 3, 22, 2], (6, 6))
    assert mask[1, 4] == mask[1, 5] == mask[2, 0] == 1 and mask[2, 2] == 0
    assert mask[0].all() and mask[-1].all() and mask[:, 0].all() and mask[:, -1].all()
    interior = np.zeros((9, 7))
    interior[2:5, 1:4] = 1
    interior[6, 2:6] = 1
    decoded = mask_decode(mask_encode(interior), (9, 7))
    assert np.array_equal(decoded[1:-1, 1:-1], interior[1:-1, 1:-1])


def test_background_metrics_see_only_outside_the_mask():
    src = to_tensor(smooth_image(3))
    keep = torch.ones(40, 48)
    keep[10:30, 10:30] = 0
    inside, outside = src.clone(), src.clone()
    inside[:, 12:28, 12:28] = 1 - inside[:, 12:28, 12:28]
    outside[:, 0:5, 0:5] = 1 - outside[:, 0:5, 0:5]
    assert pixel_metrics(src, inside, keep)["mse"] == 0
    assert pixel_metrics(src, outside, keep)["mse"] > 0
    assert pixel_metrics(src, inside)["mse"] > 0


def test_structure_distance_of_a_dino_vit(tmp_path):
    dino = load_dino(str(tiny_vit(tmp_path / "vit")), "cpu")
    a, b = to_tensor(smooth_image(4)), to_tensor(smooth_image(5))
    assert structure_distance(dino, a, a) == pytest.approx(0, abs=1e-10)
    assert structure_distance(dino, a, b) > 0


def test_parse_method():
    run = parse_method("rnri:iterations=2,norm=l1,prior_weight=0.5")
    assert (run.name, run.options) == ("rnri", {"iterations": 2, "norm": "l1", "prior_weight": 0.5})
    assert parse_method("ddim").label == "ddim"
    with pytest.raises(argparse.ArgumentTypeError, match="Newton iterations per step must be a whole number"):
        parse_method("rnri:iterations=two")  # one syntax, typed by the field, as the CLI's --option
    with pytest.raises(argparse.ArgumentTypeError, match="method 'ddim' has no option 'iterations'"):
        parse_method("ddim:iterations=2")
    assert strip_brackets("a [rusty]  bike") == "a rusty bike"


def test_reconstruct_over_a_coco_folder(tmp_path):
    captions, images = coco_folder(tmp_path / "coco")
    out = tmp_path / "out"
    argv = [
        "reconstruct",
        "--model",
        "tiny",
        "--device",
        "cpu",
        "--captions",
        str(captions),
        "--images",
        str(images),
        "--method",
        "ddim",
        "--method",
        "rnri:iterations=1",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    report = json.loads((out / "eval.json").read_text())
    assert set(report["summary"]) == {"vae", "ddim", "rnri:iterations=1"}
    assert report["summary"]["rnri:iterations=1"]["unet_forwards"] == 19  # 13, and the guard's 6
    for method in ("vae", "ddim", "rnri:iterations=1"):
        assert 0 < report["summary"][method]["psnr"] < 100 and -1 <= report["summary"][method]["ssim"] <= 1
    assert "lpips" in report["skipped"] and "lpips" in (out / "eval.md").read_text()
    assert [r["key"] for r in report["rows"] if r["method"] == "ddim"] == ["7", "8"]


def test_pie_bench_runner_scores_edits_and_names_what_it_skipped(tmp_path):
    root = pie_folder(tmp_path / "pie")
    clip = tiny_clip(tmp_path / "clip")
    out = tmp_path / "out"
    argv = [
        "piebench",
        "--model",
        "tiny",
        "--device",
        "cpu",
        "--root",
        str(root),
        "--method",
        "ddim",
        "--out",
        str(out),
        "--clip-model",
        str(clip),
        "--dino-model",
        str(tmp_path / "no-such-dino"),
    ]
    assert main(argv) == 0
    report = json.loads((out / "eval.json").read_text())
    assert set(report["skipped"]) == {"lpips", "structure_distance"}
    assert "no-such-dino" in report["skipped"]["structure_distance"]
    rows = report["rows"]
    assert len(rows) == 2 and {r["editing_type_id"] for r in rows} == {"0", "1"}
    for row in rows:
        for metric in (
            "psnr_unedit_part",
            "mse_unedit_part",
            "ssim_unedit_part",
            "clip_similarity_target_image",
            "clip_similarity_target_image_edit_part",
            "clip_similarity_source_image",
        ):
            assert np.isfinite(row[metric]), metric
        assert "structure_distance" not in row and "lpips_unedit_part" not in row
    edited = out / "ddim" / "annotation_images" / "1_change_object_80/1_artificial/1_animal/000000000001.jpg"
    assert Image.open(edited).size == (32, 32)
    assert main([*argv, "--categories", "1"]) == 0
    assert len(json.loads((out / "eval.json").read_text())["rows"]) == 1
