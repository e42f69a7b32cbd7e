"""docs/batch.md's Ray Data job run by Ray itself: a local Ray (2 CPUs, no dashboard) edits a Parquet file of shapes
photos with the tiny model through the documented ``EditBatch`` and ``edit_parquet``, and the edits are
``rnri batch``'s on the same photos (to float rounding)."""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import torch
from PIL import Image

from rnri import cli
from rnri.shapes.render import render
from rnri.shapes.world import scenes

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["a large pink heart on a blue background", "a small yellow square on a striped background"]
PHOTOS = 5


def recipe() -> dict:
    """docs/batch.md's definitions of ``EditBatch`` and ``edit_parquet``, executed as a reader would paste them
    (a module Ray cannot import, so it ships the class by value to its workers)."""
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "docs" / "batch.md").read_text(), flags=re.M | re.S)
    namespace = {"__name__": "batch_recipe"}
    for code in [b for b in blocks if "class EditBatch" in b or "def edit_parquet" in b]:
        exec(compile(code, "docs/batch.md", "exec"), namespace)  # noqa: S102
    assert {"EditBatch", "edit_parquet"} <= set(namespace)
    return namespace


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, list[str]]:
    """Five rendered shapes photos with distinct captions, as files with NAME.txt captions; and the captions."""
    folder = tmp_path_factory.mktemp("photos")
    chosen, captions = [], []
    for scene in scenes(seed=3, count=40):
        if scene.caption not in captions:
            chosen.append(scene)
            captions.append(scene.caption)
        if len(chosen) == PHOTOS:
            break
    for i, scene in enumerate(chosen):
        render(scene).image.save(folder / f"photo-{i}.png")
        (folder / f"photo-{i}.txt").write_text(scene.caption)
    return folder, captions


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of two CPUs; its workers import rnri from this checkout (they inherit the environment)."""
    path = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", path)
        mp.setenv("RAY_DEDUP_LOGS", "0")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024**2)
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:
            yield ray
        finally:
            ray.shutdown()


def batch_outputs(folder: Path, out: Path, capsys) -> dict[tuple[str, str], Image.Image]:
    """``rnri batch`` on the photo files (one thread, as each Ray worker runs): {(caption, target): edit}."""
    targets = out.parent / "targets.txt"
    targets.write_text("\n".join(TARGETS) + "\n")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        argv = ["batch", str(folder), "--targets", str(targets), "-o", str(out), "--batch-size", "2", "--quiet"]
        code = cli.main([*argv, "--model", "tiny", "--device", "cpu"])
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    assert code == 0
    found = {}
    for txt in sorted(folder.glob("*.txt")):
        for k, target in enumerate(TARGETS):
            (path,) = (out / f"{txt.stem}-png").glob(f"{k:02d}-*.png")
            found[(txt.read_text(), target)] = Image.open(path).convert("RGB")
    return found


def test_the_documented_ray_job_makes_rnri_batchs_edits(local_ray, photos, tmp_path, capsys):
    folder, captions = photos
    table = pa.table(
        {
            "image": [(folder / f"photo-{i}.png").read_bytes() for i in range(PHOTOS)],
            "caption": captions,
        }
    )
    pq.write_table(table, tmp_path / "photos.parquet")
    job = recipe()
    job["edit_parquet"](
        str(tmp_path / "photos.parquet"),
        str(tmp_path / "edits"),
        TARGETS,
        model="tiny",
        side=64,
        batch_size=2,
        workers=1,
        gpus_per_worker=0,
    )
    rows = pq.read_table(tmp_path / "edits").to_pylist()
    assert sorted((r["caption"], r["target"]) for r in rows) == sorted((c, t) for c in captions for t in TARGETS)
    expected = batch_outputs(folder, tmp_path / "batch", capsys)
    identical = 0
    for row in rows:
        ours = np.asarray(Image.open(io.BytesIO(row["edit"])).convert("RGB"), dtype=int)
        theirs = np.asarray(expected[(row["caption"], row["target"])], dtype=int)
        assert ours.shape == theirs.shape == (64, 64, 3)
        assert np.abs(ours - theirs).max() <= 1, (row["caption"], row["target"])
        identical += np.array_equal(ours, theirs)
    with capsys.disabled():  # docs/batch.md reports this count
        print(f"\n{identical} of {len(rows)} Ray edits identical to rnri batch's", file=sys.stderr)
