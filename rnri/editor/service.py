"""The editor service every front end shares: one edit in, one typed result out.

``Editor(pipe, cache)`` inverts a checked photo once per session, source prompt and settings (the inversion and
its reconstruction are cached), then edits from the cache: a new target prompt, edit guidance or mask costs one pass
of the chain. Model work runs one call at a time (a lock, whatever the front end's queue does) and, on a Hugging
Face ZeroGPU Space, under ``spaces.GPU``; the cache is kept outside those calls.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from rnri.api import Inversion, auto_mask, invert, regenerate
from rnri.core.counting import Measured, measure
from rnri.core.settings import InversionSettings
from rnri.editor.cache import BoundedDict, CachedInversion, InversionCache, InversionKey
from rnri.editor.form import Choices, LocalEdit
from rnri.editor.regions import background_psnr, overlay, region_of
from rnri.editor.report import Report, report_of
from rnri.editor.steering import Steering, refuse_unsupported
from rnri.editor.uploads import InputError, Photo
from rnri.pipelines.adapter import denoiser, embeds_guidance
from rnri.pipelines.backbones import backbone_of, default_guidance
from rnri.pipelines.flux import is_flux
from rnri.pipelines.images import psnr
from rnri.pipelines.spaces_support import gpu_task

Progress = Callable[[int, int], None]  # (steps done, steps in all) of the inversion
PLAIN = Steering()  # an edit steered by its target prompt alone


@dataclass(frozen=True)
class EditRequest:
    """One edit, every input checked."""

    photo: Photo
    painted: torch.Tensor | None  # (1, 1, H, W) at the photo's size, where a person painted; None: nothing
    source: str  # what the photo shows
    target: str  # what it should become
    choices: Choices  # the inversion's settings, the edit's guidance, the local edit
    session: str = "local"  # whose cache entries these are
    steering: Steering = PLAIN  # negative prompt, concepts, attention control (rnri.editor.steering)

    @property
    def settings(self) -> InversionSettings:
        return self.choices.settings

    @property
    def local(self) -> LocalEdit:
        return self.choices.local


@dataclass(frozen=True)
class EditResult:
    """An edit and what it took."""

    image: Image.Image  # the edit, at the photo's size
    reconstruction: Image.Image  # the photo regenerated under the source prompt
    overlay: Image.Image  # the photo tinted where the edit acted (all of it without a mask)
    inversion: Inversion  # its residuals feed the plot
    report: Report


# How long ZeroGPU lends a GPU to one call: the work it will do, at a pace measured on an H200 (a 512x512 inversion
# of 13 forwards took 0.52 s in fp16, docs/results.md: 0.04 s a forward), four times over for a slice of the card
# (ZeroGPU's default since 2026: half an RTX Pro 6000 Blackwell, unmeasured) or a busy neighbour, plus the pipeline's
# move to a freshly lent GPU. A shorter lease queues sooner on ZeroGPU.
SECONDS_PER_FORWARD, LEASE_MARGIN, LEASE_OVERHEAD_S, MAX_LEASE_S = 0.04, 4, 10, 120


def gpu_seconds(forwards: int, size: tuple[int, int], guided: bool) -> int:
    """Seconds to lease a GPU for ``forwards`` UNet passes on an image of ``size`` (both CFG branches when
    ``guided``), from ``LEASE_OVERHEAD_S`` up to ``MAX_LEASE_S``."""
    pixels = max(size[0] * size[1] / 512**2, 0.25)  # small images do not run faster than launches allow
    work = forwards * SECONDS_PER_FORWARD * pixels * (2 if guided else 1) * LEASE_MARGIN
    return int(min(MAX_LEASE_S, math.ceil(LEASE_OVERHEAD_S + work)))


class Editor:
    """Inversions cached per session, edits from them; ``pipe`` is a stock diffusers pipeline."""

    def __init__(self, pipe: Any, cache: InversionCache | None = None, model: str = "") -> None:
        self.pipe, self.model = pipe, model
        self.cache = cache if cache is not None else InversionCache()
        self._lock = threading.Lock()  # one model call at a time: hooks count UNet passes per call
        self._shown = BoundedDict(1024)  # per session: what its last edit was made of
        # ZeroGPU lends a GPU per call of these (a no-op elsewhere); they read the cache, never write it.
        # Each lease follows the request (steps, size, method): a callable of the same arguments, as spaces.GPU takes.
        self.invert_photo = gpu_task(self.invert_photo, duration=self.inversion_lease)
        self.regenerate_photo = gpu_task(self.regenerate_photo, duration=self.edit_lease)
        self.estimate_mask = gpu_task(self.estimate_mask, duration=self.mask_lease)

    @property
    def guidance(self) -> float:
        """The guidance the pipeline's backbone inverts at by default."""
        return default_guidance(self.pipe)

    @property
    def edit_guidance(self) -> float:
        """The guidance the pipeline's backbone edits at by default (Stable Diffusion: with CFG, unlike inverting)."""
        return default_guidance(self.pipe, edit=True)

    def edit(self, request: EditRequest, progress: Progress | None = None) -> EditResult:
        """Edit, inverting first unless this session's cache has the inversion."""
        self.check_steering(request)
        cached, reused = self.inversion(request, progress)
        self._shown[request.session] = _made_of(request)
        return self._edit_from(request, cached, reused)

    def re_edit(
        self, request: EditRequest, invert: bool = False, progress: Progress | None = None
    ) -> EditResult | None:
        """Edit unless the session already shows this edit: from the cached inversion, or, with ``invert``, inverting
        first when there is none; None when there is nothing to do."""
        self.check_steering(request)
        cached = self.cache.get(self._key(request))
        if self._shown.get(request.session) == _made_of(request) or (cached is None and not invert):
            return None
        if cached is None:
            return self.edit(request, progress)
        self._shown[request.session] = _made_of(request)
        return self._edit_from(request, cached, True)

    def forget(self, session: str) -> None:
        """The session's page shows no edit any more (a refused one cleared it): its next edit is made, whatever
        it is."""
        self._shown.pop(session, None)

    def check_steering(self, request: EditRequest) -> None:
        """``InputError`` with the reason where the request's steering has no place on this pipeline (before any
        work is done)."""
        refuse_unsupported(request.steering, self.pipe, request.choices.edit_guidance)
        if request.steering.control is not None and not request.source:
            raise InputError("Attention control reuses the photo's attention under its source prompt: describe it.")

    def inversion(self, request: EditRequest, progress: Progress | None = None) -> tuple[CachedInversion, bool]:
        """The session's cached inversion for ``request`` and whether it was cached; inverts when not.

        The mask is no part of the key: painting, clearing or changing how it blends re-edits from the cache.
        """
        key = self._key(request)
        cached = self.cache.get(key)
        if cached is not None:
            return cached, True
        cached = self.invert_photo(request.photo, request.source, key.settings, progress)
        self.cache.put(key, cached)
        return cached, False

    def mask_of(self, request: EditRequest) -> Image.Image:
        """The automatic mask of ``request``'s target prompt (estimated once per cached inversion)."""
        cached, _ = self.inversion(request)
        known = cached.auto_masks.get((request.target, request.choices.edit_guidance))
        if known is None:
            known = self.estimate_mask(cached.inversion, request.target, request.choices.edit_guidance)
            cached.auto_masks[(request.target, request.choices.edit_guidance)] = known
        return known

    def invert_photo(
        self, photo: Photo, source: str, settings: InversionSettings, progress: Progress | None = None
    ) -> CachedInversion:
        """Invert ``photo`` under ``source`` and reconstruct it, reporting progress per inverted step."""
        notices: list[str] = []

        def on_step(done: int, total: int, residuals: list[float]) -> None:
            if progress is not None:
                progress(done, total)

        with self._lock, caught(notices, "Source prompt"), measure(denoiser(self.pipe)) as cost:
            inv = invert(self.pipe, source, image=photo.image, callback=on_step, settings=settings)
        with self._lock, caught([], "Source prompt"), measure(denoiser(self.pipe)) as rebuild:
            reconstruction = regenerate(self.pipe, inv, source)
        return CachedInversion(inv, reconstruction, psnr(photo.image, reconstruction), cost, rebuild, tuple(notices))

    def regenerate_photo(
        self, inv: Inversion, target: str, guidance: float, mask: Any, local: LocalEdit, steering: Steering = PLAIN
    ) -> tuple[Image.Image, Image.Image | None, Measured, list[str]]:
        """The edit under ``target`` where ``mask`` lets it act (a region, ``"auto"``: estimated now, None: all),
        steered by ``steering``; the automatic mask when estimated now, the cost and the notices."""
        notices: list[str] = []
        estimated = None
        with self._lock, caught(notices, "Target prompt"), measure(denoiser(self.pipe)) as cost:
            if isinstance(mask, str):
                mask = estimated = auto_mask(self.pipe, inv, target, guidance_scale=guidance)
            kwargs = dict(guidance_scale=guidance, mask=mask, blend=local.blend, **steering.regenerate_kwargs())
            edited = regenerate(self.pipe, inv, target, **kwargs)
        return edited, estimated, cost, notices

    def estimate_mask(self, inv: Inversion, target: str, guidance: float) -> Image.Image:
        """Where the edit acts, estimated from the two prompts (``rnri.auto_mask``)."""
        with self._lock, caught([], "Target prompt"):
            return auto_mask(self.pipe, inv, target, guidance_scale=guidance)

    def inversion_lease(self, photo: Photo, source: str, settings: InversionSettings, progress: Any = None) -> int:
        """GPU seconds for :meth:`invert_photo`: each step's solve (its iterations cost two passes each, the guess
        and the check one each) and the reconstruction."""
        steps = settings.num_inference_steps or backbone_of(self.pipe).num_inference_steps
        iterations = getattr(settings.solver, "iterations", 1)
        return gpu_seconds(steps * (3 + 2 * iterations), photo.image.size, self._guided(settings.guidance_scale))

    def edit_lease(
        self, inv: Inversion, target: str, guidance: float, mask: Any, local: LocalEdit, steering: Steering = PLAIN
    ) -> int:
        """GPU seconds for :meth:`regenerate_photo`: the regeneration (each of its UNet calls over the steering's
        branches), and the automatic mask's estimate first."""
        steps = inv.num_inference_steps * (steering.branches + (1 if isinstance(mask, str) else 0))
        return gpu_seconds(steps + 1, _image_size(inv), self._guided(guidance))

    def mask_lease(self, inv: Inversion, target: str, guidance: float) -> int:
        """GPU seconds for :meth:`estimate_mask`."""
        return gpu_seconds(inv.num_inference_steps + 1, _image_size(inv), self._guided(guidance))

    def _guided(self, guidance: float | None) -> bool:
        """Whether the UNet runs both CFG branches (a backbone without a guidance embedding, guidance over 1; FLUX
        never: dev embeds its guidance, schnell takes none)."""
        return not (embeds_guidance(self.pipe) or is_flux(self.pipe)) and (guidance is None or guidance > 1)

    def _key(self, request: EditRequest) -> InversionKey:
        settings = request.settings
        if settings.guidance_scale is None:
            settings = dataclasses.replace(settings, guidance_scale=self.guidance)
        if settings.num_inference_steps is None:
            settings = dataclasses.replace(settings, num_inference_steps=backbone_of(self.pipe).num_inference_steps)
        return InversionKey(request.session, request.photo.digest, request.source, settings)

    def _edit_from(self, request: EditRequest, cached: CachedInversion, reused: bool) -> EditResult:
        mask, how = _mask_for(request, cached)
        guidance, target = request.choices.edit_guidance, request.target
        image, estimated, cost, notes = self.regenerate_photo(
            cached.inversion, target, guidance, mask, request.local, request.steering
        )
        if estimated is not None:
            cached.auto_masks[(request.target, guidance)] = estimated
            mask = estimated
        region = None if mask is None else region_of(mask, request.photo.image.size)
        kept = None if region is None else background_psnr(request.photo.image, image, region, request.local.blend)
        report = report_of(
            self.model, cached, reused, cost, image.size, [*request.photo.notices, *cached.notices, *notes]
        )
        report = report.with_mask(how, region, kept, request.local.blend)
        painted = overlay(request.photo.image, region, request.local.blend)
        return EditResult(image, cached.reconstruction, painted, cached.inversion, report)


def _mask_for(request: EditRequest, cached: CachedInversion) -> tuple[Any, str]:
    """The mask to edit with and what it is: the painted one; else, with auto on, the automatic one; else none."""
    if request.painted is not None:
        return request.painted, "painted"
    if not request.local.auto:
        return None, "none"
    known = cached.auto_masks.get((request.target, request.choices.edit_guidance))
    return (known, "auto (reused)") if known is not None else ("auto", "auto")


def _made_of(request: EditRequest) -> tuple:
    """What an edit depends on, to tell whether a live re-edit would show what the page shows already."""
    painted = None if request.painted is None else hash(request.painted.numpy().tobytes())
    return request.photo.digest, painted, request.source, request.target, request.choices, request.steering


@contextmanager
def caught(notices: list[str], prefix: str) -> Iterator[None]:
    """Collect the warnings raised inside the block (a prompt cut to fit the text encoder, ...) as notices."""
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        yield
    notices += [f"{prefix}: {r.message}" for r in records if issubclass(r.category, UserWarning)]


def _image_size(inv: Inversion) -> tuple[int, int]:
    """The size of the image ``inv`` was inverted from (latents are 8x smaller)."""
    return inv.latents.shape[-1] * 8, inv.latents.shape[-2] * 8
