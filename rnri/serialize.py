"""Saving an ``Inversion`` to a safetensors file and loading it back exactly: tensors plus JSON metadata, no pickle.

Layout of a file:
    tensors     ``latents``; ``noises.0`` .. (absent entries are None); ``trajectory.0`` ..; ``source_image``
                (uint8, (H, W, C)); every tensor field of ``Inversion`` under its own name
    metadata    ``format`` = "rnri.core.inversion", ``version``, ``fields`` (JSON: how each field is stored, and the
                values of the plain ones), optionally ``model`` (the pipeline the inversion was made with)

A file may come from anyone: its metadata is bounded (size, and JSON nesting read in one linear pass,
``rnri.jsonshape``) before it is parsed, and every value is checked against the range a front end accepts
(``rnri.core.settings``) before an ``Inversion`` is handed out.
"""

from __future__ import annotations

import dataclasses
import json
import math
import reprlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from rnri.api import CHAINS, Inversion
from rnri.core.options import plain, settings_of
from rnri.core.settings import InversionSettings
from rnri.jsonshape import json_shape

FORMAT = "rnri.core.inversion"
VERSION = 1
IMAGE_MODES = {"RGB": 3, "RGBA": 4, "L": 1}  # modes stored exactly as uint8 arrays, and their channels
SETTINGS = settings_of(InversionSettings)  # the ranges a stored guidance, step count and seed must lie in
MAX_METADATA_BYTES = 1 << 20  # a real file's metadata is a few KiB (residuals, solver options, the prompt)
MAX_NESTING = 16  # JSON nesting of 'fields'; a real file's is 4 (fields, a field record, a tuple, its list)
MAX_MODEL_NAME = 4096  # a Hub id or a local folder's path (PATH_MAX)
MAX_LATENT_SIDE = int(SETTINGS["resolution"].option.high)  # no latent is larger than the largest photo side
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # Pillow's decompression-bomb threshold, which the editor's
# photo loader also refuses above (rnri.editor.uploads; the editor is a layer above, so it is not imported here)


class InversionFileError(ValueError):
    """A file is not a readable rnri inversion; the message says what is wrong with it."""


def save_inversion(inv: Inversion, path: str | Path, *, model: str | None = None) -> None:
    """Write ``inv`` (every field) to ``path`` as safetensors; ``model`` names the pipeline it belongs to.

    ``ValueError`` for an inversion that ``load_inversion`` would refuse: no file is written that cannot be read.
    """
    _check(inv)
    tensors: dict[str, torch.Tensor] = {}
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(Inversion):
        fields[f.name] = _encode_field(f.name, getattr(inv, f.name), tensors)
    metadata = {"format": FORMAT, "version": str(VERSION), "fields": json.dumps(fields)}
    if model is not None:
        metadata["model"] = model
    _check_metadata(metadata)
    save_file(tensors, str(path), metadata=metadata)


def load_inversion(path: str | Path, *, device: str | torch.device = "cpu") -> Inversion:
    """The ``Inversion`` saved at ``path``, its tensors on ``device``; ``InversionFileError`` if malformed."""
    metadata, tensors = _read(path)
    fields = _fields_header(metadata, path)
    values = {name: _decode_field(name, spec, tensors, device, path) for name, spec in fields.items()}
    try:
        inv = Inversion(**values)
    except TypeError as error:
        raise InversionFileError(f"{path}: fields do not make an Inversion ({error})") from error
    try:
        _check(inv)
    except ValueError as error:
        raise InversionFileError(f"{path}: {error}") from error
    return inv


def saved_model(path: str | Path) -> str | None:
    """The model recorded in an inversion file (None when none was recorded); its tensors are not read."""
    metadata, _ = _read(path, with_tensors=False)
    return metadata.get("model")


def _encode_field(name: str, value: Any, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    if isinstance(value, torch.Tensor):
        tensors[name] = _cpu_copy(value)
        return {"kind": "tensor"}
    if _is_tensor_list(value):
        for i, v in enumerate(value):
            if v is not None:
                tensors[f"{name}.{i}"] = _cpu_copy(v)
        return {"kind": "tensors", "present": [v is not None for v in value]}
    if isinstance(value, Image.Image):
        if value.mode not in IMAGE_MODES:
            raise ValueError(
                f"cannot save field {name!r}: image mode {value.mode!r} is not one of {tuple(IMAGE_MODES)}"
            )
        tensors[name] = torch.from_numpy(np.array(value, dtype=np.uint8))
        return {"kind": "image", "mode": value.mode}
    return {"kind": "json", "value": _to_json(value, name)}


def _is_tensor_list(value: Any) -> bool:
    """A list of tensors and Nones with at least one tensor (all-None lists are stored as JSON)."""
    if not isinstance(value, list) or not all(v is None or isinstance(v, torch.Tensor) for v in value):
        return False
    return any(isinstance(v, torch.Tensor) for v in value)


def _cpu_copy(t: torch.Tensor) -> torch.Tensor:
    """A detached, contiguous CPU copy that shares memory with nothing (safetensors refuses shared tensors)."""
    return t.detach().to("cpu", copy=True).contiguous()


def _to_json(value: Any, name: str) -> Any:
    """``value`` as JSON, tuples tagged so that they come back as tuples."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple):
        return {"__tuple__": [_to_json(v, name) for v in value]}
    if isinstance(value, list):
        return [_to_json(v, name) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        if "__tuple__" in value:
            raise ValueError(f"cannot save field {name!r}: the key '__tuple__' is reserved")
        return {k: _to_json(v, name) for k, v in value.items()}
    raise ValueError(f"cannot save field {name!r}: {type(value).__name__} values are not supported")


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_from_json(v) for v in value["__tuple__"])
        return {k: _from_json(v) for k, v in value.items()}
    return value


def _read(path: str | Path, with_tensors: bool = True) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The metadata, checked before anything else is read, and the tensors of the file at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise InversionFileError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            problem = _metadata_problem(metadata)
            wanted = with_tensors and not problem
            tensors = {key: f.get_tensor(key) for key in f.keys()} if wanted else {}  # noqa: SIM118 (safe_open is no dict)
    except (SafetensorError, OSError, ValueError) as error:
        raise InversionFileError(f"{path}: not a safetensors file ({error})") from error
    if problem:
        raise InversionFileError(f"{path}: {problem}")
    return metadata, tensors


def _check_metadata(metadata: dict[str, str]) -> None:
    problem = _metadata_problem(metadata)
    if problem:
        raise ValueError(f"cannot save this inversion: {problem}")


def _metadata_problem(metadata: dict[str, str]) -> str | None:
    """What makes ``metadata`` no rnri inversion's, before its JSON is parsed (None when nothing does)."""
    size = sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())
    if size > MAX_METADATA_BYTES:
        return f"its metadata is {size} bytes, over the {MAX_METADATA_BYTES} an inversion's may have"
    if metadata.get("format") != FORMAT:
        return f"a safetensors file, but not an rnri inversion (no format={FORMAT!r})"
    if metadata.get("version") != str(VERSION):
        return f"inversion file version {_shown(metadata.get('version'))}; this rnri reads version {VERSION}"
    depth = json_shape(metadata.get("fields", "")).depth
    if depth > MAX_NESTING:
        return f"the 'fields' metadata is nested {depth} levels deep, over the {MAX_NESTING} an inversion's may be"
    model = metadata.get("model")
    if model is not None and not (0 < len(model) <= MAX_MODEL_NAME and model.isprintable()):
        return f"the 'model' metadata is no model name (printable, up to {MAX_MODEL_NAME} characters)"
    return None


def _fields_header(metadata: dict[str, str], path: str | Path) -> dict[str, Any]:
    try:
        fields = json.loads(metadata.get("fields", ""))
    except ValueError as error:  # JSONDecodeError, or an integer of more digits than Python converts
        raise InversionFileError(f"{path}: the 'fields' metadata is not valid JSON ({error})") from error
    if not isinstance(fields, dict) or not all(isinstance(s, dict) for s in fields.values()):
        raise InversionFileError(f"{path}: the 'fields' metadata is not an object of field records")
    known = {f.name for f in dataclasses.fields(Inversion)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise InversionFileError(f"{path}: unknown field(s) {_shown(unknown)}; was it written by a newer rnri?")
    return fields


def _decode_field(name: str, spec: dict[str, Any], tensors: dict[str, torch.Tensor], device, path) -> Any:
    kind = spec.get("kind")
    if kind == "json":
        return _from_json(spec.get("value"))
    if kind == "tensor":
        return _tensor(tensors, name, path).to(device)
    if kind == "tensors":
        present = spec.get("present")
        if not isinstance(present, list) or not all(isinstance(p, bool) for p in present):
            raise InversionFileError(f"{path}: field {name!r} has no valid 'present' list")
        return [_tensor(tensors, f"{name}.{i}", path).to(device) if p else None for i, p in enumerate(present)]
    if kind == "image":
        return _image(name, spec.get("mode"), _tensor(tensors, name, path), path)
    raise InversionFileError(f"{path}: field {name!r} has unknown kind {_shown(kind)}")


def _image(name: str, mode: Any, array: torch.Tensor, path) -> Image.Image:
    """An image stored as a uint8 (H, W) or (H, W, C) array, C the mode's channels, at most MAX_PIXELS."""
    channels = IMAGE_MODES.get(mode) if isinstance(mode, str) else None
    shape = (channels,) if channels and channels > 1 else ()
    if channels is None or array.dtype != torch.uint8 or array.ndim != 2 + len(shape) or array.shape[2:] != shape:
        raise InversionFileError(f"{path}: field {name!r} is not a valid {_shown(mode)} image")
    if array.shape[0] * array.shape[1] > MAX_PIXELS:
        raise InversionFileError(f"{path}: field {name!r} is an image of over {MAX_PIXELS} pixels")
    return Image.fromarray(array.numpy()).convert(mode)


def _tensor(tensors: dict[str, torch.Tensor], key: str, path) -> torch.Tensor:
    if key not in tensors:
        raise InversionFileError(f"{path}: tensor {key!r} is missing")
    return tensors[key]


def _check(inv: Inversion) -> None:
    """``ValueError`` naming the first field that is out of range or does not fit the others (what regeneration
    relies on; a file may hold anything)."""
    n = _check_schedule(inv)
    _check_latents(inv, n)
    _check_record(inv, n)


def _check_schedule(inv: Inversion) -> int:
    """The timesteps, step count, guidance, seed and chain; the number of inverted steps."""
    t = inv.timesteps
    if not isinstance(t, list) or not t or not all((_is_int(x) or isinstance(x, float)) and 0 <= x <= 1e4 for x in t):
        raise ValueError("timesteps must be a non-empty list of non-negative integers (a flow's: numbers)")
    if any(a <= b for a, b in zip(t, t[1:])):
        raise ValueError(f"timesteps must decrease (noisiest first), got {_shown(t)}")
    _check_setting("num_inference_steps", inv.num_inference_steps, low=len(t))
    _check_setting("guidance_scale", inv.guidance_scale)
    if inv.seed is not None:
        _check_setting("seed", inv.seed)
    if inv.chain not in CHAINS:
        raise ValueError(f"chain must be one of {CHAINS}, got {_shown(inv.chain)}")
    return len(t)


def _check_setting(name: str, value: Any, low: float | None = None) -> None:
    """``value`` has the type of the setting ``name`` and lies in its range (rnri.core.settings), and >= ``low``."""
    setting = SETTINGS[name]
    integer = setting.kind is int
    low, high = max(setting.option.low, low if low is not None else -math.inf), setting.option.high
    number = _is_int(value) or (not integer and isinstance(value, float))
    if not (number and low <= value <= high):  # False for NaN too
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind} from {plain(low)} to {plain(high)}, got {_shown(value)}")


def _check_latents(inv: Inversion, n: int) -> None:
    """z_T, the n noises (None or z_T's shape) and the n + 1 trajectory latents: finite float tensors."""
    z = inv.latents
    if not _is_float_tensor(z) or z.ndim != 4 or z.shape[0] != 1:
        raise ValueError("latents must be a float tensor of shape (1, C, h, w)")
    if max(z.shape[-2:]) > MAX_LATENT_SIDE:
        raise ValueError(f"latents must be at most {MAX_LATENT_SIDE} on a side, got {tuple(z.shape)}")
    if not isinstance(inv.noises, list) or len(inv.noises) != n:
        raise ValueError(f"noises must be a list of {n} entries (one per timestep)")
    if not isinstance(inv.trajectory, list) or len(inv.trajectory) != n + 1:
        raise ValueError(f"trajectory must be a list of {n + 1} latents")
    named = [("latents", z), *(("trajectory", x) for x in inv.trajectory)]
    for name, x in named + [("noises", x) for x in inv.noises if x is not None]:
        if not _is_float_tensor(x) or x.shape != z.shape:
            raise ValueError(f"every noise and trajectory latent must be a float tensor of shape {tuple(z.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contain NaN or infinite values")


def _check_record(inv: Inversion, n: int) -> None:
    """What the inversion cost and where it came from: counts, residuals, the input's size, image and prompt."""
    for name in ("unet_forwards", "unet_backwards"):
        if not (_is_int(getattr(inv, name)) and getattr(inv, name) >= 0):
            raise ValueError(f"{name} must be a non-negative integer, got {_shown(getattr(inv, name))}")
    rows = inv.residuals
    if not isinstance(rows, list) or len(rows) != n or not all(isinstance(r, list) for r in rows):
        raise ValueError(f"residuals must be a list of {n} lists")
    if not all(_is_int(x) or isinstance(x, float) for r in rows for x in r):
        raise ValueError("residuals must be numbers")
    size = inv.image_size
    if size is not None and not (isinstance(size, tuple) and len(size) == 2 and all(_is_int(s) for s in size)):
        raise ValueError(f"image_size must be (width, height) or None, got {_shown(size)}")
    if size is not None and not (min(size) >= 1 and size[0] * size[1] <= MAX_PIXELS):
        raise ValueError(f"image_size must be at least 1x1 and at most {MAX_PIXELS} pixels, got {size}")
    if inv.source_image is not None and (
        not isinstance(inv.source_image, Image.Image) or inv.source_image.size != size
    ):
        raise ValueError(f"source_image must be an image of image_size {size}")
    for name, kind in (("method", str), ("prompt", str), ("solver_options", dict)):
        if not isinstance(getattr(inv, name), kind):
            raise ValueError(f"{name} must be a {kind.__name__}, got {_shown(getattr(inv, name))}")
    if not (isinstance(inv.fallbacks, list) and all(isinstance(line, str) for line in inv.fallbacks)):
        raise ValueError(f"fallbacks must be a list of strings, got {_shown(inv.fallbacks)}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_float_tensor(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point()


def _shown(value: Any) -> str:
    """``repr(value)``, cut short: a file's strings go into one-line error messages."""
    shorter = reprlib.Repr()
    shorter.maxstring = shorter.maxother = 60
    return shorter.repr(value)
