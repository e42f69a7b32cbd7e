"""Counting denoiser evaluations (a UNet's, or FLUX's transformer's: ``rnri.pipelines.adapter.denoiser``) from the
outside, by hooks on the module, so no solver can miscount itself; and timing a block of work."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class UNetCalls:
    """UNet passes seen by the hooks."""

    forwards: int = 0  # calls of the UNet's forward, whatever their batch
    backwards: int = 0  # backward passes through a UNet output (vector-Jacobian products)
    items: int = 0  # forwards weighted by their batch size: a call on a batch of two counts 2 (forward-equivalents)


def _output_tensor(output) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple):
        return output[0] if output and isinstance(output[0], torch.Tensor) else None
    return getattr(output, "sample", None)


@contextmanager
def count_unet_calls(unet: nn.Module) -> Iterator[UNetCalls]:
    """Count forward and backward passes of ``unet`` (any denoiser module: a UNet, FLUX's transformer) inside the
    ``with`` block; outputs may be a tensor, a tuple (``return_dict=False``) or an output object with ``.sample``."""
    calls = UNetCalls()

    def on_backward(grad: torch.Tensor) -> None:
        calls.backwards += 1

    def on_forward(module: nn.Module, args, output) -> None:
        calls.forwards += 1
        out = _output_tensor(output)
        calls.items += 1 if out is None else out.shape[0]
        if out is not None and out.requires_grad:
            out.register_hook(on_backward)

    handle = unet.register_forward_hook(on_forward)
    try:
        yield calls
    finally:
        handle.remove()


@dataclass
class Measured:
    """Wall time and UNet passes of a :func:`measure` block."""

    seconds: float = 0.0
    calls: UNetCalls = field(default_factory=UNetCalls)


@contextmanager
def stopwatch(device: torch.device | str | None = None) -> Iterator[Measured]:
    """Wall time of the ``with`` block; on a CUDA ``device`` queued work is waited for at both ends, so the time is
    the work's and not the time to queue it. The one timer of the editor and the benches."""
    result = Measured()
    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    try:
        yield result
    finally:
        if cuda:
            torch.cuda.synchronize(device)
        result.seconds = time.perf_counter() - start


@contextmanager
def measure(unet: nn.Module) -> Iterator[Measured]:
    """Wall time (on the UNet's device) and UNet passes of the ``with`` block."""
    with stopwatch(next(unet.parameters()).device) as result, count_unet_calls(unet) as calls:
        result.calls = calls
        yield result
