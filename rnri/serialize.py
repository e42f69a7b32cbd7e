"""Saving an ``Inversion`` to a safetensors file and loading it back exactly: tensors plus JSON metadata, no pickle.

Layout of a file:
    tensors     ``latents``; ``noises.0`` .. (absent entries are None); ``trajectory.0`` ..; ``source_image``
                (uint8, (H, W, C)); every tensor field of ``Inversion`` under its own name
    metadata    ``format`` = "rnri.inversion", ``version``, ``fields`` (JSON: how each field is stored, and the
                values of the plain ones), optionally ``model`` (the pipeline the inversion was made with)
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from rnri.api import CHAINS, Inversion

FORMAT = "rnri.inversion"
VERSION = 1
IMAGE_MODES = ("RGB", "RGBA", "L")  # modes stored exactly as uint8 arrays


class InversionFileError(ValueError):
    """A file is not a readable rnri inversion; the message says what is wrong with it."""


def save_inversion(inv: Inversion, path: str | Path, *, model: str | None = None) -> None:
    """Write ``inv`` (every field) to ``path`` as safetensors; ``model`` names the pipeline it belongs to."""
    tensors: dict[str, torch.Tensor] = {}
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(Inversion):
        fields[f.name] = _encode_field(f.name, getattr(inv, f.name), tensors)
    metadata = {"format": FORMAT, "version": str(VERSION), "fields": json.dumps(fields)}
    if model is not None:
        metadata["model"] = model
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
    _validate(inv, path)
    return inv


def saved_model(path: str | Path) -> str | None:
    """The model recorded in an inversion file (None when none was recorded)."""
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
            raise ValueError(f"cannot save field {name!r}: image mode {value.mode!r} is not one of {IMAGE_MODES}")
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
    path = Path(path)
    if not path.is_file():
        raise InversionFileError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is no dict) if with_tensors else {}
    except (SafetensorError, OSError, ValueError) as error:
        raise InversionFileError(f"{path}: not a safetensors file ({error})") from error
    if metadata.get("format") != FORMAT:
        raise InversionFileError(f"{path}: a safetensors file, but not an rnri inversion (no format={FORMAT!r})")
    if metadata.get("version") != str(VERSION):
        raise InversionFileError(
            f"{path}: inversion file version {metadata.get('version')!r}; this rnri reads version {VERSION}"
        )
    return metadata, tensors


def _fields_header(metadata: dict[str, str], path: str | Path) -> dict[str, Any]:
    try:
        fields = json.loads(metadata.get("fields", ""))
    except json.JSONDecodeError as error:
        raise InversionFileError(f"{path}: the 'fields' metadata is not valid JSON ({error})") from error
    if not isinstance(fields, dict) or not all(isinstance(s, dict) for s in fields.values()):
        raise InversionFileError(f"{path}: the 'fields' metadata is not an object of field records")
    known = {f.name for f in dataclasses.fields(Inversion)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise InversionFileError(f"{path}: unknown field(s) {unknown}; was it written by a newer rnri?")
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
        mode, array = spec.get("mode"), _tensor(tensors, name, path)
        if mode not in IMAGE_MODES or array.dtype != torch.uint8 or array.ndim != (2 if mode == "L" else 3):
            raise InversionFileError(f"{path}: field {name!r} is not a valid {mode!r} image")
        return Image.fromarray(array.numpy()).convert(mode)
    raise InversionFileError(f"{path}: field {name!r} has unknown kind {kind!r}")


def _tensor(tensors: dict[str, torch.Tensor], key: str, path) -> torch.Tensor:
    if key not in tensors:
        raise InversionFileError(f"{path}: tensor {key!r} is missing")
    return tensors[key]


def _validate(inv: Inversion, path: str | Path) -> None:
    """Refuse an Inversion whose parts do not fit together (what regeneration relies on)."""

    def bad(message: str) -> InversionFileError:
        return InversionFileError(f"{path}: {message}")

    if not isinstance(inv.latents, torch.Tensor) or inv.latents.ndim != 4 or not inv.latents.is_floating_point():
        raise bad("latents must be a float tensor of shape (1, C, h, w)")
    if not torch.isfinite(inv.latents).all():
        raise bad("latents contain NaN or infinite values")
    n = len(inv.timesteps) if isinstance(inv.timesteps, list) else -1
    if n < 1 or not all(isinstance(t, int) and not isinstance(t, bool) for t in inv.timesteps):
        raise bad("timesteps must be a non-empty list of integers")
    if not isinstance(inv.num_inference_steps, int) or inv.num_inference_steps < n:
        raise bad(f"num_inference_steps must be an integer of at least {n}")
    if not isinstance(inv.guidance_scale, int | float) or not math.isfinite(inv.guidance_scale):
        raise bad("guidance_scale must be a finite number")
    if inv.chain not in CHAINS:
        raise bad(f"chain must be one of {CHAINS}, got {inv.chain!r}")
    if not isinstance(inv.noises, list) or len(inv.noises) != n:
        raise bad(f"noises must be a list of {n} entries (one per timestep)")
    if not isinstance(inv.trajectory, list) or len(inv.trajectory) != n + 1:
        raise bad(f"trajectory must be a list of {n + 1} latents")
    for t in [*inv.trajectory, *(x for x in inv.noises if x is not None)]:
        if not isinstance(t, torch.Tensor) or t.shape != inv.latents.shape:
            raise bad(f"every noise and trajectory latent must have the latents' shape {tuple(inv.latents.shape)}")
    if not isinstance(inv.residuals, list) or len(inv.residuals) != n:
        raise bad(f"residuals must be a list of {n} lists")
