"""What steers an edit besides its target prompt: a negative prompt, concepts to add or remove, attention control.

- **Negative prompt**: what the edit steers away from, in classifier-free guidance's unconditional branch (Stable
  Diffusion, SDXL, the shapes teacher: ``rnri.regenerate(..., negative_prompt=)``).
- **Concepts** (LEdits++'s panel): rows of a phrase, a strength and add or remove, each a direction of
  ``rnri.core.directions`` (weight +strength to add, -strength to remove) inside its implicit mask.
- **Attention control** (Prompt-to-Prompt, ``rnri.pipelines.attention``): the edit reuses the photo's attention.

Every setting is described once (``rnri.core.options``): the attention control's and the concepts' own on their config
dataclasses, the rest below; :func:`steering_controls` lists them by the ``/edit`` parameter names a page and the
API show, :func:`read_steering` reads raw values back into a checked :class:`Steering`, and
:func:`steering_not_applicable` names the controls the pipeline has no place for, each with the reason (a page
disables them with that line, as the form's ``not_applicable``).
Changing any of them re-edits from the cached inversion: none is part of the inversion.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rnri.core.directions import Direction, Directions
from rnri.core.options import Setting, check, option, settings_of
from rnri.editor.uploads import InputError, clean_prompt
from rnri.pipelines.attention import AttentionControl, inject_keys_values, inject_maps, refine, replace
from rnri.support import negative_prompt_support, steering_support

ADD, REMOVE = "add", "remove"
INJECTIONS = {"maps": inject_maps, "keys-values": inject_keys_values}  # the names a person picks, once
ALIGNMENTS = {"refine": refine, "replace": replace}
MAX_CONCEPTS = 6  # each concept is one more item of every UNet call of the edit (and the reference one more)
CONTROL_FIELDS = ("self_fraction", "cross_fraction", "local_blend", "blend_threshold", "blend_dilation", "blend_start")
CONCEPT_FIELDS = {"concept_threshold": "threshold", "concept_warmup": "warmup"}  # control name -> Directions field


@dataclass(frozen=True)
class Concept:
    """One row of the concept panel (its columns: text, strength, mode)."""

    text: str = option("", "Concept", "A word or phrase the edit should bring in, or take out.")
    strength: float = option(
        1.0, "Strength", "How far: 1 moves as far as a whole edit to the concept would.", low=0, high=3, step=0.1
    )
    mode: str = option(ADD, "Add or remove", "Bring the concept in, or take it out.", choices=(ADD, REMOVE))


@dataclass(frozen=True)
class SteeringOptions:
    """The steering settings that are not fields of ``AttentionControl`` or ``Directions``."""

    negative_prompt: str = option(
        "", "Negative prompt", "What the edit should steer away from (classifier-free guidance's unconditional "
        "branch; Stable Diffusion and SDXL).",
    )  # fmt: skip
    attention_control: bool = option(
        False, "Attention control", "Keep the photo's layout: the edit reuses its attention (Prompt-to-Prompt)."
    )
    injection: str = option(
        "maps", "Self-attention from the photo", "maps: its attention maps on the edit's values (P2P); keys-values: "
        "its keys and values too (MasaCtrl), which carries more of its look.", choices=tuple(INJECTIONS),
    )  # fmt: skip
    alignment: str = option(
        "refine", "Word alignment", "refine: only words both prompts share keep the photo's attention; replace: a "
        "swapped word of the same length takes the old word's too.", choices=tuple(ALIGNMENTS),
    )  # fmt: skip


@dataclass(frozen=True)
class Steering:
    """An edit's steering, checked; the default steers nothing (a plain edit)."""

    negative_prompt: str = ""  # "": the stock unconditional branch
    concepts: tuple[Direction, ...] = ()  # signed weights: + to add, - to remove
    concept_threshold: float | None = 0.9  # Directions.threshold (None or 0: everywhere)
    concept_warmup: float = 0.0  # Directions.warmup
    control: AttentionControl | None = None  # None: off

    @property
    def directions(self) -> Directions | None:
        if not self.concepts:
            return None
        threshold = self.concept_threshold or None  # quantile 0 keeps every cell: no mask, without recording maps
        return Directions(self.concepts, threshold=threshold, warmup=self.concept_warmup)

    def regenerate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``rnri.regenerate`` (a plain edit's: all None)."""
        negative = self.negative_prompt or None
        return {"negative_prompt": negative, "control": self.control, "directions": self.directions}

    @property
    def branches(self) -> int:
        """Items of each UNet call of the edit: the edit's, the photo's under control, each concept's and the
        reference prompt's with concepts (``rnri.pipelines.control``)."""
        return 1 + (self.control is not None) + (len(self.concepts) + 1 if self.concepts else 0)


def steering_controls() -> dict[str, Setting]:
    """Every steering setting by the ``/edit`` parameter name, in the order a page shows them: the negative prompt,
    attention control and its settings, then the concepts' mask and warm-up (the rows: :func:`concept_columns`)."""
    own, control, concept = settings_of(SteeringOptions), settings_of(AttentionControl), settings_of(Directions)
    found = {"negative_prompt": own["negative_prompt"], "attention_control": own["attention_control"]}
    found |= {name: control[name] for name in CONTROL_FIELDS[:2]}
    found |= {"injection": own["injection"], "alignment": own["alignment"]}
    found |= {name: control[name] for name in CONTROL_FIELDS[2:]}
    for name, field in CONCEPT_FIELDS.items():
        found[name] = dataclasses.replace(concept[field], name=name, optional=False)
    return found


def concept_columns() -> dict[str, Setting]:
    """The columns of a concept row: text, strength, mode."""
    return settings_of(Concept)


def steering_not_applicable(pipe: Any, edit_guidance: float | None = None) -> dict[str, str]:
    """The steering controls (and ``"concepts"``, the rows) that ``pipe`` has no place for at ``edit_guidance`` (None:
    the backbone's), each with the reason, as ``rnri.editor.not_applicable`` gives the form's: a page shows them
    disabled with that line, and a request that sets them is refused (:func:`read_steering`)."""
    negative, steering = negative_prompt_support(pipe, edit_guidance), steering_support(pipe)
    found = {} if negative.applies else {"negative_prompt": negative.reason}
    if not steering.applies:
        found |= {name: steering.reason for name in [*steering_controls(), "concepts"] if name != "negative_prompt"}
    return found


def read_steering(values: Mapping[str, Any], pipe: Any, edit_guidance: float, concepts: Any = None) -> Steering:
    """The steering of raw values (by control name; missing ones at their defaults) and concept rows, checked;
    ``InputError`` naming the setting or row, or saying why this pipeline has no place for what was asked."""
    checked = {}
    for name, setting in steering_controls().items():  # every value, also of what is off: a bad one is refused
        try:
            checked[name] = check(setting, values.get(name, setting.default))
        except ValueError as error:
            raise InputError(str(error)) from error
    negative = clean_prompt(checked["negative_prompt"], "negative prompt", required=False)
    control = None
    if checked["attention_control"]:
        inject, align = INJECTIONS[checked["injection"]], ALIGNMENTS[checked["alignment"]]
        control = AttentionControl(inject=inject, align=align, **{name: checked[name] for name in CONTROL_FIELDS})
    concept_settings = checked["concept_threshold"], checked["concept_warmup"]
    steering = Steering(negative, read_concepts(concepts), *concept_settings, control)
    refuse_unsupported(steering, pipe, edit_guidance)
    return steering


def read_concepts(rows: Any) -> tuple[Direction, ...]:
    """Concept rows as directions: each row [text, strength, mode] or {"text", "strength", "mode"} (a page's
    table, Gradio's {"headers", "data"}, or a pandas DataFrame); rows without text or strength are skipped."""
    if rows is None:
        return ()
    if isinstance(rows, Mapping) and "data" in rows:  # Gradio's Dataframe value, as API clients send it
        rows = rows["data"]
    elif hasattr(rows, "columns") and hasattr(rows, "values"):  # a pandas DataFrame, as a page hands it over
        rows = rows.values.tolist()
    if isinstance(rows, str | bytes) or not isinstance(rows, Sequence):
        raise InputError(f"Concepts are rows of text, strength and add or remove; got {type(rows).__name__}.")
    found = [direction for n, row in enumerate(rows, 1) if (direction := _concept(n, row)) is not None]
    if len(found) > MAX_CONCEPTS:
        raise InputError(f"At most {MAX_CONCEPTS} concepts are applied at once; {len(found)} were given.")
    return tuple(found)


def _concept(n: int, row: Any) -> Direction | None:
    columns = concept_columns()
    if isinstance(row, Mapping):
        cells = dict(row)
    elif isinstance(row, Sequence) and not isinstance(row, str | bytes) and len(row) <= len(columns):
        cells = dict(zip(columns, row))
    else:
        raise InputError(f"Concept {n}: a row is [text, strength, add or remove], got {row!r}.")
    unknown = set(cells) - set(columns)
    if unknown:
        raise InputError(f"Concept {n}: unknown columns {sorted(unknown)}; the columns are {', '.join(columns)}.")
    try:
        concept = Concept(**{name: check(s, _blank(cells.get(name), s)) for name, s in columns.items()})
    except ValueError as error:
        raise InputError(f"Concept {n}: {error}") from error
    text = clean_prompt(concept.text, f"concept {n}", required=False)
    if not text or concept.strength == 0:
        return None
    return Direction(text, concept.strength if concept.mode == ADD else -concept.strength)


def _blank(cell: Any, setting: Setting) -> Any:
    """A cell left empty (None, "", NaN from a table) is the column's default."""
    empty = cell is None or (isinstance(cell, str) and not cell.strip() and setting.kind is not str)
    return setting.default if empty or cell != cell else cell  # cell != cell: NaN


def refuse_unsupported(steering: Steering, pipe: Any, edit_guidance: float | None) -> None:
    """``InputError`` with the reason where ``steering`` asks what ``pipe`` has no place for."""
    if steering.negative_prompt:
        support = negative_prompt_support(pipe, edit_guidance)
        if not support.applies:
            raise InputError(support.reason)
    if steering.control is not None or steering.concepts:
        support = steering_support(pipe)
        if not support.applies:
            raise InputError(support.reason)
