"""The edit chain with attention control and several directions: every branch in one batched UNet call per step.

Branches, in batch order: the source (only under attention control: the inverted latent ``z_i^src`` under the source
prompt), the edit (its own latent ``z_i`` under the prompt given), then each direction's prompt and the reference
prompt (only with :class:`rnri.core.directions.Directions`), all at the edit's latent. The source branch follows the
inversion's own trajectory ``z_i^src`` (it is not re-sampled), so the attention reused is the photo's.

Each step: ``eps`` of every branch in one call; the edit's ``eps`` (its branch's, or the directions' sum); the
chain's step map with the stored noise; and where a region is known (a painted mask, or the local blend), the
Blended Latent Diffusion update ``z_{i+1} = m S_i(z_i) + (1 - m) z_{i+1}^src``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from rnri.core.chain import EpsFn, Step, step_map
from rnri.core.directions import Directions, combine, implicit_mask
from rnri.pipelines import adapter
from rnri.pipelines.attention import Alignment, AttentionControl, ControlState, controlled_attention, step_count

Combine = Callable[[int, torch.Tensor, torch.Tensor | None], torch.Tensor]
# (step index, eps of every branch (B, C, h, w), this step's cross-attention maps (B, L, h, w) or None) -> the
# edit's eps (1, C, h, w)
Region = Callable[[int, torch.Tensor | None], torch.Tensor | None]
# (step index, this step's maps) -> where the edit acts (1, 1, h, w), or None: everywhere


def controlled_sample(
    eps_fn: EpsFn,
    steps: list[Step],
    source: list[torch.Tensor],
    noises: list[torch.Tensor | None],
    state: ControlState,
    with_source: bool,
    combine_eps: Combine,
    region: Region,
) -> list[torch.Tensor]:
    """The edit chain from ``source[0]``, every branch in one call of ``eps_fn`` per step: [z_T, ..., clean].

    source: the inverted trajectory ``[z_T, ..., clean]``, each (1, C, h, w); with_source: branch 0 is the source.
    """
    z, trajectory = source[0], [source[0]]
    for i, step in enumerate(steps):
        state.begin_step(i, len(steps))
        edit_branches = z.expand(state.branches - with_source, -1, -1, -1)
        batch = torch.cat([source[i], edit_branches]) if with_source else edit_branches
        eps_all = eps_fn(batch, step.t)
        maps = state.step_maps()
        z = step_map(z, combine_eps(i, eps_all, maps), step, None if step.is_last else noises[i])
        mask = region(i, maps)
        if mask is not None:
            z = mask * z + (1.0 - mask) * source[i + 1]  # Blended Latent Diffusion, Eq. 3
        trajectory.append(z)
    return trajectory


def edit_branch(first: int) -> Combine:
    """The edit's eps is its own branch's (branch ``first``)."""

    def combine_eps(i: int, eps: torch.Tensor, maps: torch.Tensor | None) -> torch.Tensor:
        return eps[first : first + 1]

    return combine_eps


def fixed_region(mask: torch.Tensor | None) -> Region:
    """The same region at every step: a painted mask (1, 1, h, w), or None (everywhere)."""

    def region(i: int, maps: torch.Tensor | None) -> torch.Tensor | None:
        return mask

    return region


def word_region(maps: torch.Tensor, words: Sequence[int], threshold: float, dilation: int) -> torch.Tensor:
    """Where the words' summed cross-attention maps (L, h, w) exceed ``threshold`` of their maximum after a max
    filter of radius ``dilation`` (P2P's LocalBlend); (1, 1, h, w), all 0 without words."""
    if not words:
        return torch.zeros(1, 1, *maps.shape[-2:], device=maps.device)
    total = maps[list(words)].sum(dim=0)[None, None]
    total = F.max_pool2d(total, 2 * dilation + 1, stride=1, padding=dilation)
    return (total > threshold * total.max()).float()


class LocalBlend:
    """P2P's local blend: the edit acts where the edited words attend, in the maps accumulated over the steps so
    far: the words the target removes or swaps out on the source branch, the words it brings in on the edit's.
    Where the prompts share every word there is nothing to localise: the edit acts everywhere (so that control on
    and off reconstruct alike)."""

    def __init__(self, control: AttentionControl, alignment: Alignment, steps: int, edit: int) -> None:
        self.control, self.alignment, self.edit = control, alignment, edit
        self.start = step_count(control.blend_start, steps)
        self.total: torch.Tensor | None = None

    def __call__(self, i: int, maps: torch.Tensor | None) -> torch.Tensor | None:
        if maps is not None:
            self.total = maps if self.total is None else self.total + maps
        c, a = self.control, self.alignment
        if i < self.start or self.total is None or not (a.edited_source or a.edited_target):
            return None
        removed = word_region(self.total[0], a.edited_source, c.blend_threshold, c.blend_dilation)
        added = word_region(self.total[self.edit], a.edited_target, c.blend_threshold, c.blend_dilation)
        return torch.maximum(removed, added)


def direction_combine(
    directions: Directions, first: int, words: list[list[int]], has_reference: bool, steps: int
) -> Combine:
    """The edit's eps under several directions: branch ``first`` is the prompt's, then the directions', then the
    reference's (or, without ``has_reference``, the prompt's branch is the reference); ``words``: each direction's
    token positions, for its implicit mask."""
    k = len(directions.terms)
    weights = torch.tensor([d.weight for d in directions.terms])
    warmup = step_count(directions.warmup, steps)

    def combine_eps(i: int, eps: torch.Tensor, maps: torch.Tensor | None) -> torch.Tensor:
        base = eps[first : first + 1]
        if i < warmup:
            return base
        terms = eps[first + 1 : first + 1 + k]
        reference = eps[first + 1 + k : first + 2 + k] if has_reference else base
        masks = None
        if directions.threshold is not None:
            attention = [maps[first + 1 + j, words[j]].sum(dim=0) for j in range(k)]
            differences = terms - reference
            masks = torch.cat(
                [implicit_mask(attention[j], differences[j : j + 1], directions.threshold) for j in range(k)]
            )
        return combine(base, terms, reference, weights.to(eps), masks)

    return combine_eps


# --- on a pipeline ---------------------------------------------------------------------------------------------


def token_ids(pipe, prompt: str) -> list[int]:
    """``prompt``'s token ids padded to the text encoder's length, as the pipeline's ``encode_prompt`` makes them."""
    tokenizer = pipe.tokenizer
    return tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True).input_ids


def word_positions(ids: Sequence[int]) -> list[int]:
    """Positions of a prompt's words: after the start token, before the first end token (= padding token)."""
    end = ids[-1]
    return list(range(1, ids.index(end) if end in ids else len(ids)))


def batched_eps_fn(pipe, prompts: list[str], w_emb: torch.Tensor) -> EpsFn:
    """``eps`` of a batch whose item b is under ``prompts[b]``: one UNet call of batch ``len(prompts)``."""
    return adapter.unet_eps_fn(pipe, torch.cat([adapter.encode_prompt(pipe, p) for p in prompts]), w_emb)


@torch.no_grad()
def edit_chain(
    pipe,
    steps: list[Step],
    source: list[torch.Tensor],
    noises: list[torch.Tensor | None],
    prompts: tuple[str, str],
    w_emb: torch.Tensor,
    control: AttentionControl | None,
    directions: Directions | None,
    mask: torch.Tensor | None,
) -> list[torch.Tensor]:
    """The edit of the inverted ``source`` trajectory from ``prompts = (source prompt, target prompt)`` under
    attention control and/or directions; ``mask`` (1, 1, h, w), where the edit may act, overrides the local blend."""
    source_prompt, prompt = prompts
    branch_prompts = ([source_prompt] if control else []) + [prompt]
    first = len(branch_prompts) - 1  # the edit's branch
    alignment = control.align(token_ids(pipe, source_prompt), token_ids(pipe, prompt)) if control else None
    combine_eps = edit_branch(first)
    record = bool(control and control.local_blend and mask is None)
    if directions is not None:
        has_reference = directions.reference is not None and directions.reference != prompt
        branch_prompts += [d.prompt for d in directions.terms] + ([directions.reference] if has_reference else [])
        words = [word_positions(token_ids(pipe, d.prompt)) for d in directions.terms]
        combine_eps = direction_combine(directions, first, words, has_reference, len(steps))
        record = record or directions.threshold is not None
    region: Region = fixed_region(mask)
    if control and control.local_blend and mask is None:
        region = LocalBlend(control, alignment, len(steps), first)
    state = ControlState(control, alignment, len(branch_prompts), tuple(source[0].shape[-2:]), record)
    eps_fn = batched_eps_fn(pipe, branch_prompts, w_emb)
    with controlled_attention(pipe.unet, state):
        return controlled_sample(eps_fn, steps, source, noises, state, control is not None, combine_eps, region)
