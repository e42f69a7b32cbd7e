"""The editor service every front end shares (docs/architecture.md, "Layers"): checked uploads, the inversion
cache, one edit as a typed request and result, reports, and opening the model; and what front ends derive their
controls and flags from (the settings' one description). No UI code here.

Names are imported on first use, so a front end can import this package before it needs torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rnri.core.lazy import attach

_WHERE = {
    "Concept": "rnri.editor.steering",
    "MAX_CONCEPTS": "rnri.editor.steering",
    "Steering": "rnri.editor.steering",
    "SteeringOptions": "rnri.editor.steering",
    "concept_columns": "rnri.editor.steering",
    "read_concepts": "rnri.editor.steering",
    "read_steering": "rnri.editor.steering",
    "steering_not_applicable": "rnri.editor.steering",
    "steering_controls": "rnri.editor.steering",
    "Support": "rnri.support",
    "CAPTION_MODEL": "rnri.editor.caption",
    "CaptionOptions": "rnri.editor.caption",
    "Captioning": "rnri.editor.caption",
    "Suggestion": "rnri.editor.caption",
    "open_captioning": "rnri.editor.caption",
    "BoundedDict": "rnri.editor.cache",
    "CachedInversion": "rnri.editor.cache",
    "InversionCache": "rnri.editor.cache",
    "InversionKey": "rnri.editor.cache",
    "LatestRequest": "rnri.editor.cache",
    "Choices": "rnri.editor.form",
    "EDITOR_METHODS": "rnri.editor.form",
    "EditOptions": "rnri.editor.form",
    "LocalEdit": "rnri.editor.form",
    "controls": "rnri.editor.form",
    "not_applicable": "rnri.editor.form",
    "read_form": "rnri.editor.form",
    "solver_settings": "rnri.editor.form",
    "LEVELS": "rnri.editor.process",
    "configure_logging": "rnri.editor.process",
    "share_cpu_politely": "rnri.editor.process",
    "FastPath": "rnri.pipelines.gpu",
    "FastPathError": "rnri.pipelines.gpu",
    "OFFLOAD_CHOICES": "rnri.pipelines.gpu",
    "Resident": "rnri.editor.models",
    "hub_reachable": "rnri.editor.models",
    "load_failure": "rnri.editor.models",
    "model_limits": "rnri.editor.models",
    "open_model": "rnri.editor.models",
    "brush_layer": "rnri.editor.regions",
    "painted_region": "rnri.editor.regions",
    "read_region": "rnri.editor.regions",
    "MAX_LAYERS": "rnri.editor.regions",
    "Report": "rnri.editor.report",
    "EditRequest": "rnri.editor.service",
    "EditResult": "rnri.editor.service",
    "Editor": "rnri.editor.service",
    "example_caching": "rnri.pipelines.spaces_support",
    "guidance_defaults": "rnri.pipelines.backbones",
    "steps_defaults": "rnri.pipelines.backbones",
    "add_arguments": "rnri.core.options",
    "add_model_flags": "rnri.editor.flags",
    "model_flags": "rnri.editor.flags",
    "describe_options": "rnri.core.options:describe",
    "explain_option": "rnri.core.options:explain",
    "read_options": "rnri.core.options:read",
    "settings_of": "rnri.core.options",
    "with_method": "rnri.core.settings",
    "CheckedUploads": "rnri.editor.cache",
    "InputError": "rnri.editor.uploads",
    "Photo": "rnri.editor.uploads",
    "clean_prompt": "rnri.editor.uploads",
    "load_layer": "rnri.editor.uploads",
    "image_size": "rnri.editor.uploads",
    "MAX_PIXELS": "rnri.editor.uploads",
    "MAX_SIDE": "rnri.editor.uploads",
    "load_photo": "rnri.editor.uploads",
}
__all__ = [
    "CAPTION_MODEL",
    "EDITOR_METHODS",
    "LEVELS",
    "MAX_CONCEPTS",
    "MAX_LAYERS",
    "MAX_PIXELS",
    "MAX_SIDE",
    "OFFLOAD_CHOICES",
    "BoundedDict",
    "CachedInversion",
    "CaptionOptions",
    "CheckedUploads",
    "Captioning",
    "Choices",
    "Concept",
    "EditOptions",
    "EditRequest",
    "EditResult",
    "Editor",
    "FastPath",
    "FastPathError",
    "InputError",
    "InversionCache",
    "InversionKey",
    "LatestRequest",
    "LocalEdit",
    "Photo",
    "Report",
    "Resident",
    "Steering",
    "SteeringOptions",
    "Suggestion",
    "Support",
    "add_arguments",
    "add_model_flags",
    "brush_layer",
    "clean_prompt",
    "concept_columns",
    "configure_logging",
    "controls",
    "describe_options",
    "example_caching",
    "explain_option",
    "guidance_defaults",
    "image_size",
    "hub_reachable",
    "load_failure",
    "load_layer",
    "load_photo",
    "not_applicable",
    "model_flags",
    "model_limits",
    "open_captioning",
    "open_model",
    "painted_region",
    "read_concepts",
    "read_form",
    "read_options",
    "read_region",
    "read_steering",
    "settings_of",
    "share_cpu_politely",
    "solver_settings",
    "steering_not_applicable",
    "steering_controls",
    "steps_defaults",
    "with_method",
]

if TYPE_CHECKING:
    from rnri.core.options import add_arguments, settings_of
    from rnri.core.options import describe as describe_options
    from rnri.core.options import explain as explain_option
    from rnri.core.options import read as read_options
    from rnri.core.settings import with_method
    from rnri.editor.cache import (
        BoundedDict,
        CachedInversion,
        CheckedUploads,
        InversionCache,
        InversionKey,
        LatestRequest,
    )
    from rnri.editor.caption import CAPTION_MODEL, Captioning, CaptionOptions, Suggestion, open_captioning
    from rnri.editor.flags import add_model_flags, model_flags
    from rnri.editor.form import (
        EDITOR_METHODS,
        Choices,
        EditOptions,
        LocalEdit,
        controls,
        not_applicable,
        read_form,
        solver_settings,
    )
    from rnri.editor.models import Resident, hub_reachable, load_failure, model_limits, open_model
    from rnri.editor.process import LEVELS, configure_logging, share_cpu_politely
    from rnri.editor.regions import MAX_LAYERS, brush_layer, painted_region, read_region
    from rnri.editor.report import Report
    from rnri.editor.service import Editor, EditRequest, EditResult
    from rnri.editor.steering import (
        MAX_CONCEPTS,
        Concept,
        Steering,
        SteeringOptions,
        concept_columns,
        read_concepts,
        read_steering,
        steering_controls,
        steering_not_applicable,
    )
    from rnri.editor.uploads import (
        MAX_PIXELS,
        MAX_SIDE,
        InputError,
        Photo,
        clean_prompt,
        image_size,
        load_layer,
        load_photo,
    )
    from rnri.pipelines.backbones import guidance_defaults, steps_defaults
    from rnri.pipelines.gpu import OFFLOAD_CHOICES, FastPath, FastPathError
    from rnri.pipelines.spaces_support import example_caching
    from rnri.support import Support

__getattr__, __dir__ = attach(__name__, _WHERE)
