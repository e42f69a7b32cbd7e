"""Attention control of an edit (Prompt-to-Prompt, Hertz et al. 2022; MasaCtrl, Cao et al. 2023) on the stock UNet.

The UNet runs a batch of branches in one call: branch 0 is the source (the inverted photo's latent under the source
prompt), branch 1 the edit (the edited latent under the target prompt), further branches extra prompts evaluated at
the edit's latent (:mod:`rnri.core.directions`). During the first steps the edit branches reuse the source's attention:

- self-attention, for structure: the source's attention maps applied to the edit's values (P2P,
  ``out_e = A_src V_e``) or the source's keys and values (MasaCtrl, ``out_e = softmax(Q_e K_src^T / sqrt(d)) V_src``);
- cross-attention, for the words the prompts share: the edit's map of a shared token is the source's map of the token
  it aligns to (P2P's refinement ``A_e[:, :, j] = A_src[:, :, a(j)]``; with word swap also the swapped words').

Notation: Q, K, V (B, heads, N, d) per branch; A = softmax(Q K^T / sqrt(d)) (B, heads, N, M); N queries (latent
cells of the layer), M keys (N for self-attention, L prompt tokens for cross-attention).

Processors are installed with diffusers' ``set_attn_processor`` inside :func:`controlled_attention`, which puts the
UNet's own processors back afterwards, also on error. Where a step or layer is not controlled, and in any other
thread, the UNet's own processor runs, so the stock computation is untouched.
"""

from __future__ import annotations

import difflib
import math
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0
from torch import nn

from rnri.core.options import option

STOCK_PROCESSORS = (AttnProcessor, AttnProcessor2_0)  # what a controlled layer may replace (same math, same weights)


# --- token alignment between the source and target prompts -----------------------------------------------------


@dataclass(frozen=True)
class Alignment:
    """Which target tokens take a source token's cross-attention map, and which words the edit changes."""

    source_index: tuple[int, ...]  # per target token position: the source position it aligns to
    mapped: tuple[bool, ...]  # per target token position: whether it takes the source's map
    edited_source: tuple[int, ...]  # source positions of the words the target removes or swaps
    edited_target: tuple[int, ...]  # target positions of the words the target adds or swaps in


Aligner = Callable[[Sequence[int], Sequence[int]], Alignment]  # (source ids, target ids), each padded to length L


def _words(ids: Sequence[int]) -> int:
    """Length of the start token, the words and the first end token: where padding (repeated end tokens) begins."""
    end = ids[-1]  # CLIP pads with its end token; the last position is padding or the end token itself
    return ids.index(end) + 1 if end in ids else len(ids)


def _align(source: Sequence[int], target: Sequence[int], swap: bool) -> Alignment:
    """Align the word spans with difflib's matching blocks; padding aligns position by position from the end.

    ``swap``: a replaced span of as many tokens as it replaces maps position by position (P2P's word swap).
    """
    if len(source) != len(target):
        raise ValueError(f"prompts must be padded to the same length, got {len(source)} and {len(target)}")
    n_s, n_t = _words(source), _words(target)
    index, mapped = list(range(len(target))), [False] * len(target)
    edited_source: list[int] = []
    edited_target: list[int] = []
    matcher = difflib.SequenceMatcher(a=list(source[:n_s]), b=list(target[:n_t]), autojunk=False)
    for tag, s0, s1, t0, t1 in matcher.get_opcodes():
        if tag == "equal" or (swap and tag == "replace" and s1 - s0 == t1 - t0):
            for offset in range(t1 - t0):
                index[t0 + offset], mapped[t0 + offset] = s0 + offset, True
        if tag != "equal":
            edited_source += range(s0, s1)
            edited_target += range(t0, t1)
    for j in range(n_t, len(target)):  # padding: the source's padding at the same distance from the end
        index[j], mapped[j] = min(max(j + n_s - n_t, n_s), len(source) - 1), True
    return Alignment(tuple(index), tuple(mapped), tuple(edited_source), tuple(edited_target))


def refine(source: Sequence[int], target: Sequence[int]) -> Alignment:
    """P2P's refinement: only tokens the prompts share take the source's maps; new words keep their own."""
    return _align(source, target, swap=False)


def replace(source: Sequence[int], target: Sequence[int]) -> Alignment:
    """P2P's word swap: also a swapped word of the same token count takes the map of the word it replaces."""
    return _align(source, target, swap=True)


# --- the attention math ----------------------------------------------------------------------------------------


def attention_maps(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``A = softmax(Q K^T / sqrt(d) + bias)`` in float32: (B, heads, N, M)."""
    scores = q.float() @ k.float().transpose(-1, -2) / math.sqrt(q.shape[-1])
    return (scores if bias is None else scores + bias.float()).softmax(dim=-1)


def inject_maps(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """P2P's self-attention replacement: every branch's values under the source's (branch 0) maps."""
    return (attention_maps(q[:1], k[:1], bias) @ v.float()).to(v.dtype)


def inject_keys_values(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """MasaCtrl's mutual self-attention: every branch's queries read the source's (branch 0) keys and values."""
    return F.scaled_dot_product_attention(q, k[:1].expand_as(k), v[:1].expand_as(v), attn_mask=bias)


SelfInjection = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def refine_maps(maps: torch.Tensor, source_index: torch.Tensor, mapped: torch.Tensor) -> torch.Tensor:
    """The edit branch's (1) cross-attention maps with every mapped token's column taken from the source's (0)
    column of the token it aligns to: ``A_e[..., j] = A_src[..., a(j)]`` where mapped. maps (B, heads, N, L)."""
    edited = torch.where(mapped, maps[0][..., source_index], maps[1])
    return torch.cat([maps[:1], edited[None], maps[2:]])


INJECTIONS: dict[str, SelfInjection] = {"maps": inject_maps, "keys-values": inject_keys_values}  # names for front ends
ALIGNERS: dict[str, Aligner] = {"refine": refine, "replace": replace}  # names for front ends


# --- the control's settings and its per-run state ---------------------------------------------------------------


@dataclass(frozen=True)
class AttentionControl:
    """How an edit reuses the source's attention; fractions count the chain's steps from the first (noisiest)."""

    self_fraction: float = option(  # share of the steps whose self-attention is injected from the source (structure)
        0.5, "Layout kept", "Share of the steps whose self-attention is the photo's: more keeps its layout.",
        low=0, high=1, step=0.05,
    )  # fmt: skip
    cross_fraction: float = option(  # share of the steps whose shared words' cross-attention maps are the source's
        0.75, "Words kept in place", "Share of the steps in which the words both prompts share attend where they did "
        "in the photo.", low=0, high=1, step=0.05,
    )  # fmt: skip
    inject: SelfInjection = inject_maps  # inject_maps (P2P: source maps, edit values) or inject_keys_values (MasaCtrl)
    align: Aligner = refine  # refine (shared tokens) or replace (also swapped words of equal token count)
    local_blend: bool = option(  # keep the source chain outside the cross-attention maps of the edited words
        True, "Local blend", "Edit only where the changed words attend; elsewhere the photo's chain is followed."
    )
    blend_threshold: float = option(  # a cell is edited where the edited words' map reaches this share of its maximum
        0.3, "Local blend threshold", "Share of its maximum the changed words' attention must reach where the edit "
        "acts.", low=0.05, high=0.95, step=0.05,
    )  # fmt: skip
    blend_dilation: int = option(  # latent cells the local blend's region grows by before thresholding (P2P: one)
        1, "Local blend growth", "Latent cells the local blend's region grows by.", low=0, high=4, step=1
    )
    blend_start: float = option(  # share of the steps before the local blend begins
        0.0, "Local blend start", "Share of the steps before the local blend begins.", low=0, high=1, step=0.05
    )
    max_tokens: int = 1024  # layers with more queries (latent cells) than this run uncontrolled (P2P: 32x32)

    def __post_init__(self) -> None:
        for name in ("self_fraction", "cross_fraction", "blend_start"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.blend_threshold < 1.0:
            raise ValueError(f"blend_threshold must be in (0, 1), got {self.blend_threshold}")
        if self.blend_dilation < 0 or self.max_tokens < 1:
            raise ValueError("blend_dilation must be >= 0 and max_tokens >= 1")


def step_count(fraction: float, n: int) -> int:
    """How many of ``n`` steps a fraction covers, rounded half up (0.5 of 3 steps is 2)."""
    return math.floor(fraction * n + 0.5)


class ControlState:
    """What the processors of one controlled regeneration share; the sampler moves it from step to step.

    It records, per step, the head-averaged cross-attention maps of every branch at the latent grid, for the
    local blend and the implicit masks of :mod:`rnri.core.directions`.
    """

    def __init__(
        self,
        control: AttentionControl | None,
        alignment: Alignment | None,
        branches: int,
        latent_size: tuple[int, int],
        record_maps: bool,
    ) -> None:
        self.control, self.branches, self.latent_size, self.record_maps = control, branches, latent_size, record_maps
        self.alignment = alignment
        self.thread = threading.get_ident()
        self.inject_self = self.replace_cross = False
        self._maps: torch.Tensor | None = None  # sum over this step's layers, (B, L, h, w)
        self._layers = 0
        self._alignment_tensors: tuple[torch.Tensor, torch.Tensor] | None = None

    def begin_step(self, i: int, n: int) -> None:
        """Step ``i`` of ``n`` begins: decide what is controlled in it and forget the last step's maps."""
        c = self.control
        self.inject_self = c is not None and i < step_count(c.self_fraction, n)
        self.replace_cross = c is not None and self.alignment is not None and i < step_count(c.cross_fraction, n)
        self._maps, self._layers = None, 0

    def step_maps(self) -> torch.Tensor | None:
        """This step's cross-attention maps, averaged over heads and layers: (B, L, h, w); None if none recorded."""
        return None if self._maps is None else self._maps / self._layers

    def alignment_tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The alignment's source index and mapped flags (L,) on ``device``, made once per run."""
        if self._alignment_tensors is None or self._alignment_tensors[0].device != device:
            a = self.alignment
            self._alignment_tensors = (
                torch.tensor(a.source_index, device=device),
                torch.tensor(a.mapped, device=device),
            )
        return self._alignment_tensors

    def owns(self, hidden_states: torch.Tensor) -> bool:
        """Whether a call is this regeneration's: made in its thread, with its batch of branches."""
        return threading.get_ident() == self.thread and hidden_states.shape[0] == self.branches

    def record(self, maps: torch.Tensor) -> None:
        """Add one layer's maps (B, heads, N, L), resized from its grid to the latent grid, to this step's sum."""
        grid = layer_grid(maps.shape[2], self.latent_size)
        if grid is None:
            return
        b, _, _, tokens = maps.shape
        mean = maps.mean(dim=1).transpose(1, 2).reshape(b, tokens, *grid).float()
        mean = F.interpolate(mean, size=self.latent_size, mode="bilinear", align_corners=False)
        self._maps = mean if self._maps is None else self._maps + mean
        self._layers += 1


def layer_grid(queries: int, latent_size: tuple[int, int]) -> tuple[int, int] | None:
    """The (h, w) grid of a layer with ``queries`` cells inside a UNet on latents of ``latent_size``; None when no
    downsampling by a power of two (rounding up, as strided convolutions do) gives it."""
    h, w = latent_size
    factor = 1
    while factor <= max(h, w):
        grid = (math.ceil(h / factor), math.ceil(w / factor))
        if grid[0] * grid[1] == queries:
            return grid
        factor *= 2
    return None


# --- the processor ---------------------------------------------------------------------------------------------


class ControlledProcessor:
    """An attention layer's processor during a controlled regeneration: the projections of ``AttnProcessor2_0``, the
    attention changed as ``state`` says, and the layer's own ``stock`` processor wherever nothing is changed."""

    def __init__(self, state: ControlState, stock: AttnProcessor | AttnProcessor2_0) -> None:
        self.state, self.stock = state, stock

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        state, cross = self.state, encoder_hidden_states is not None
        queries = hidden_states.shape[1] if hidden_states.ndim == 3 else math.prod(hidden_states.shape[2:])
        active = (state.replace_cross or state.record_maps) if cross else state.inject_self
        limit = state.control.max_tokens if state.control is not None else queries
        if not (active and queries <= limit and state.owns(hidden_states)):
            return self.stock(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        return self._controlled(attn, hidden_states, encoder_hidden_states, attention_mask, temb, cross)

    def _controlled(self, attn, hidden_states, encoder_hidden_states, attention_mask, temb, cross) -> torch.Tensor:
        residual, shape = hidden_states, hidden_states.shape
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        if hidden_states.ndim == 4:
            hidden_states = hidden_states.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, HW, C)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch, keys = context.shape[0], context.shape[1]
        bias = None
        if attention_mask is not None:
            bias = attn.prepare_attention_mask(attention_mask, keys, batch).view(batch, attn.heads, -1, keys)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if cross and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        q, k, v = (x.view(batch, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2) for x in (q, k, v))
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        out = self._cross(q, k, v, bias) if cross else self.state.control.inject(q, k, v, bias)
        out = attn.to_out[1](attn.to_out[0](out.transpose(1, 2).reshape(batch, -1, attn.heads * q.shape[-1])))
        if len(shape) == 4:
            out = out.transpose(1, 2).reshape(shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def _cross(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        state = self.state
        maps = attention_maps(q, k, bias)
        if state.replace_cross:
            maps = refine_maps(maps, *state.alignment_tensors(maps.device))
        if state.record_maps:
            state.record(maps)
        return (maps @ v.float()).to(v.dtype)


# --- installing and restoring ----------------------------------------------------------------------------------

_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # UNet -> the lock held while it is controlled
_LOCKS_GUARD = threading.Lock()


def _lock(unet: nn.Module) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(unet, threading.Lock())


@contextmanager
def controlled_attention(unet: nn.Module, state: ControlState) -> Iterator[None]:
    """Run the ``with`` block with :class:`ControlledProcessor` on every attention layer of ``unet``; afterwards,
    also after an error, the UNet has exactly the processors it had before. One controlled block per UNet at a
    time: another thread waits (it would otherwise save and restore this block's processors)."""
    with _lock(unet):
        stock = dict(unet.attn_processors)
        odd = {type(p).__name__ for p in stock.values() if type(p) not in STOCK_PROCESSORS}
        if odd:
            raise ValueError(
                f"attention control needs diffusers' standard attention processors; this UNet has {sorted(odd)}"
            )
        try:
            unet.set_attn_processor({name: ControlledProcessor(state, p) for name, p in stock.items()})
            yield
        finally:
            unet.set_attn_processor(dict(stock))  # set_attn_processor empties the dict it is given
