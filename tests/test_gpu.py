"""The fast-path knobs on fresh tiny pipelines (they change a pipeline in place), their measurement, and ZeroGPU."""

from __future__ import annotations

import types

import pytest
import torch
from conftest import noise_image
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

import rnri
from rnri.pipelines import gpu, spaces_support
from rnri_lab.bench import knobs, timing


@pytest.fixture(scope="module")
def reference():
    """Clean latents of a baseline edit on a fresh tiny pipeline."""
    pipe = rnri.tiny_pipeline()
    inv = rnri.invert(pipe, "a cat", image=noise_image(64, 48))
    return rnri.regenerate(pipe, inv, "a dog", output_type="latent")


def edit_latents(pipe) -> tuple[torch.Tensor, rnri.Inversion]:
    inv = rnri.invert(pipe, "a cat", image=noise_image(64, 48))
    return rnri.regenerate(pipe, inv, "a dog", output_type="latent"), inv


@pytest.mark.parametrize("config", [gpu.FastPath(channels_last=True), gpu.FastPath(sdpa=False)], ids=str)
def test_knobs_change_speed_not_results(reference, config):
    pipe = rnri.tiny_pipeline()
    fast = gpu.apply_fast_path(pipe, config)
    processors = {type(p) for p in pipe.unet.attn_processors.values()}
    assert processors == {AttnProcessor2_0 if config.sdpa else AttnProcessor}
    conv = pipe.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) == config.channels_last
    assert ("channels_last" in fast.applied) == config.channels_last and fast.warmup_seconds is None
    latents, inv = edit_latents(pipe)
    assert relative_error(latents, reference) < 1e-4  # same math, other summation order
    assert (inv.unet_forwards, inv.unet_backwards) == (7, 0)  # the default: DDIM + noise correction


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_compile_warms_up_and_keeps_counting(reference, monkeypatch):
    """torch.compile itself is stubbed (tracing a UNet takes a minute on 2 cores); rnri.pipelines.gpu's main runs
    it."""
    compiled_calls = []

    def fake_compile(fn, *, mode, backend):
        def compiled(*args, **kwargs):
            compiled_calls.append(backend)
            return fn(*args, **kwargs)

        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    pipe = rnri.tiny_pipeline()
    config = gpu.FastPath(compile=True, compile_backend="eager")
    fast = gpu.apply_fast_path(pipe, config)
    assert "compile" in fast.applied and fast.warmup_seconds > 0
    assert len(compiled_calls) == 11  # the warm-up edit (7 to invert, 4 to edit) went through the compiled forward
    gpu.compile_unet(pipe, config)  # a second time is a no-op
    latents, inv = edit_latents(pipe)
    assert len(compiled_calls) == 22 and (inv.unet_forwards, inv.unet_backwards) == (7, 0)  # hooks stay outside
    assert torch.equal(latents, reference)


COMPILED_TOLERANCE = 1e-2  # relative error of an edit's latents, compiled against eager, fp16 on a GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiled against eager on a GPU: needs CUDA, none here")
@pytest.mark.parametrize("mode", [None, "reduce-overhead"], ids=["default", "cuda-graphs"])
def test_compiled_edits_equal_eager_on_a_gpu(mode):
    """What makes ``--compile`` safe to turn on: the same edits, within ``COMPILED_TOLERANCE``, compiled or not."""
    pipe = rnri.load_pipeline("tiny", device="cuda", dtype=torch.float16)
    eager, _ = edit_latents(pipe)
    fast = gpu.apply_fast_path(pipe, gpu.FastPath(compile=True, compile_mode=mode))
    assert "compile" in fast.applied and fast.warmup_seconds > 0
    for _ in range(3):  # CUDA graphs replay from the third call on
        compiled, inv = edit_latents(pipe)
        assert relative_error(compiled.float(), eager.float()) < COMPILED_TOLERANCE
        assert (inv.unet_forwards, inv.unet_backwards) == (7, 0)  # the default: DDIM + noise correction


def test_failed_warm_up_is_a_clear_error():
    pipe = rnri.tiny_pipeline()
    with pytest.raises(gpu.FastPathError, match="torch.compile failed.*Run without compile"):
        gpu.apply_fast_path(pipe, gpu.FastPath(compile=True, compile_backend="no-such-backend"))


def test_offload_is_a_no_op_on_the_cpu_and_sized_on_a_gpu(monkeypatch):
    pipe = rnri.tiny_pipeline()
    fast = gpu.apply_fast_path(pipe, gpu.FastPath(cpu_offload="on"))
    assert "cpu_offload" not in fast.applied and "needs a CUDA GPU" in fast.skipped[0]
    assert gpu.apply_fast_path(pipe, gpu.FastPath()).skipped == []  # "auto" says nothing on a CPU
    cuda = torch.device("cuda")
    for total_gib, expected in ((4, True), (24, False)):
        props = types.SimpleNamespace(total_memory=total_gib * gpu.GIB)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device, props=props: props)
        assert gpu.wants_offload(gpu.FastPath(), cuda) is expected
        assert gpu.wants_offload(gpu.FastPath(cpu_offload="off"), cuda) is False
    with pytest.raises(ValueError, match="cpu_offload must be one of"):
        gpu.FastPath(cpu_offload="yes")


def test_preview_decoder(reference, tmp_path):
    preview = gpu.load_preview_vae("tiny", "cpu", torch.float32)
    image = gpu.preview_image(preview, reference, size=(70, 50))
    assert image.mode == "RGB" and image.size == (70, 50)
    h, w = reference.shape[-2:]
    assert gpu.preview_image(preview, reference).size == (8 * w, 8 * h)  # TAESD upsamples by 8
    with pytest.raises(rnri.ModelLoadError, match="(?s)preview decoder.*local folder.*Ways out"):
        gpu.load_preview_vae(str(tmp_path), "cpu", torch.float32)  # a folder without weights
    fast = gpu.apply_fast_path(rnri.tiny_pipeline(), gpu.FastPath(preview_vae="tiny"))
    assert "preview_vae" in fast.applied and fast.preview_vae is not None


def test_host_syncs_are_counted_by_call_site():
    x = torch.ones(3)

    def reads() -> None:
        x.sum().item()
        if x.max() > 0:
            float(x[0])

    with knobs.count_host_syncs() as sites:
        reads()
    assert sum(sites.values()) == 3 and all(site.startswith("test_gpu.py:") for site in sites)
    with knobs.count_host_syncs(cuda_only=True) as sites:
        reads()
    assert not sites  # CPU tensors never wait for a GPU
    assert "item" not in torch.Tensor.__dict__ and x.sum().item() == 3.0  # the methods are restored


def test_measure_knobs_reports_cost_per_knob():
    image = noise_image(64, 48)
    settings = {"channels_last": gpu.FastPath(channels_last=True)}
    rows = knobs.measure_knobs(rnri.tiny_pipeline, image, "a cat", "a dog", knobs=settings, repeats=1)
    assert [r.knob for r in rows] == ["channels_last"]
    for row in rows:
        assert (row.unet_forwards, row.unet_backwards) == (11, 0)  # 7 to invert, 4 to regenerate
        assert row.seconds > 0 and row.forward_equivalents > 0 and row.peak_memory_mib is None
        assert row.host_syncs == sum(row.sync_sites.values())


def test_the_one_timing_helper_warms_up_then_times_each_run():
    runs = []
    result = timing.timed(lambda: runs.append(len(runs)), "cpu", repeats=3, warmups=2)
    assert runs == [0, 1, 2, 3, 4] and len(result.seconds) == 3 and result.first >= 0
    assert result.fastest <= result.median
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        timing.timed(lambda: None, repeats=0)


def test_the_cost_benches_measure_with_the_same_helper():
    """Wall and CPU medians and the largest memory growth, after the warm-ups (edit_latency, control_cost and
    realsize report these)."""
    runs = []
    usage = timing.measured(lambda: runs.append(sum(range(10**5))), "cpu", repeats=3, warmups=1)
    assert len(runs) == 4 and usage.wall_s >= 0 and usage.cpu_s >= 0 and not usage.peak_mib < 0
    with pytest.raises(ValueError, match="warmups at least 0"):
        timing.measured(lambda: None, warmups=-1)


def test_gpu_task_is_the_identity_without_spaces(monkeypatch):
    monkeypatch.setattr(spaces_support, "spaces", None)

    def edit(x):
        return x

    assert spaces_support.gpu_task(edit) is edit
    assert spaces_support.gpu_task(duration=5)(edit) is edit


def test_gpu_task_is_spaces_gpu_when_spaces_is_installed(monkeypatch):
    calls = []

    def fake_gpu(fn, *, duration):
        calls.append((fn.__name__, duration))
        return lambda *a: ("on a lent GPU", fn(*a))

    monkeypatch.setattr(spaces_support, "spaces", types.SimpleNamespace(GPU=fake_gpu))

    @spaces_support.gpu_task
    def edit(x):
        return x + 1

    @spaces_support.gpu_task(duration=90)
    def batch(x):
        return x * 2

    assert edit(1) == ("on a lent GPU", 2) and batch(2) == ("on a lent GPU", 4)
    assert calls == [("edit", spaces_support.GPU_SECONDS), ("batch", 90)]


def test_example_caching_suits_where_the_app_runs(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert spaces_support.example_caching() == {"cache_examples": False}
    monkeypatch.setenv("SPACE_ID", "someone/rnri")
    assert spaces_support.example_caching() == {"cache_examples": True, "cache_mode": "lazy"}
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert spaces_support.on_spaces() and spaces_support.on_zero_gpu()
