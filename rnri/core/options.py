"""The one description of every setting a front end shows: label, help, range, choices (and the default, which the
dataclass field keeps).

A config dataclass marks each field a user may set with :func:`option`; the editor's controls, the command line's
flags and the evaluation's ``METHOD:KEY=VALUE`` parser are made from these fields, never written out again. Values
typed by a person go through :func:`read` (one syntax: ``KEY=VALUE[,KEY=VALUE...]``, each value converted to the
field's type) and :func:`check` (the field's range), so every front end refuses the same values with the same words.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from argparse import BooleanOptionalAction
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@dataclass(frozen=True)
class Option:
    """What a front end needs to offer one setting; the dataclass field holds its default."""

    label: str  # as the editor shows it, e.g. "Newton iterations per step"
    help: str  # one sentence: what it does (the editor's info line, the flag's help)
    low: float | None = None  # smallest value a front end accepts (None: no bound)
    high: float | None = None  # largest value a front end accepts
    step: float | None = None  # a slider's step; 1 with an int field
    choices: tuple[str, ...] | None = None  # allowed strings, in the order to show them
    flag: str | None = None  # the command-line flag when it is not the field name, e.g. "--steps"


@dataclass(frozen=True)
class Setting:
    """A field marked with :func:`option`: its name, type, default and description."""

    name: str
    kind: type  # int, float, bool or str (the field's type without None)
    default: Any
    option: Option
    optional: bool = False  # the field also takes None (meaning: decided elsewhere, e.g. by the backbone)

    @property
    def flag(self) -> str:
        return self.option.flag or "--" + self.name.replace("_", "-")


def option(default: Any, label: str, help: str, **limits: Any) -> Any:
    """A dataclass field with ``default``, described to front ends (``limits``: the rest of :class:`Option`)."""
    return dataclasses.field(default=default, metadata={"option": Option(label, help, **limits)})


def settings_of(config_type: type) -> dict[str, Setting]:
    """The fields of ``config_type`` marked with :func:`option`, by name, in declaration order."""
    hints = typing.get_type_hints(config_type)
    found = {}
    for f in dataclasses.fields(config_type):
        if "option" in f.metadata:
            kinds = [k for k in typing.get_args(hints[f.name]) if k is not type(None)] or [hints[f.name]]
            optional = type(None) in typing.get_args(hints[f.name])
            found[f.name] = Setting(f.name, kinds[0], f.default, f.metadata["option"], optional)
    return found


def check(setting: Setting, value: Any) -> Any:
    """``value`` converted to the setting's type and checked against its range and choices; ``ValueError`` saying
    which setting, what it must be and what it got."""
    if value is None and setting.optional:
        return None
    opt = setting.option
    if setting.kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{opt.label} must be true or false, got {value!r}.")
    if setting.kind is str:
        if isinstance(value, str) and (opt.choices is None or value in opt.choices):
            return value
        choices = f"one of {', '.join(opt.choices)}" if opt.choices else "a string"
        raise ValueError(f"{opt.label} must be {choices}, got {value!r}.")
    return _number(setting, value)


def check_choices(config: Any) -> None:
    """``ValueError`` (as :func:`check` words it) where a field of ``config`` with choices holds another value: the
    one check of a config's choices, called from its ``__post_init__``."""
    for setting in settings_of(type(config)).values():
        if setting.option.choices is not None:
            try:
                check(setting, getattr(config, setting.name))
            except ValueError as error:  # the field's name too: a caller of the API wrote that, not the label
                raise ValueError(f"{setting.name}: {error}") from None


def _number(setting: Setting, value: Any) -> int | float:
    opt, integer = setting.option, setting.kind is int
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer too large for a float (10**400)
        number = math.nan
    low = -math.inf if opt.low is None else opt.low
    high = math.inf if opt.high is None else opt.high
    if not (low <= number <= high and math.isfinite(number)) or (integer and not number.is_integer()):
        kind = "a whole number" if integer else "a number"
        raise ValueError(f"{opt.label} must be {kind}{_range(opt.low, opt.high)}, got {value!r}.")
    return int(number) if integer else number


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f" from {plain(low)} to {plain(high)}"
    if low is not None:
        return f" of at least {plain(low)}"
    return f" of at most {plain(high)}" if high is not None else ""


def plain(x: float) -> str:
    """A bound as a person writes it: ``1`` not ``1.0``."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def parse(setting: Setting, text: str) -> Any:
    """A typed value from text, as the setting's type reads it (``true``/``false`` for flags), then checked."""
    text = text.strip()
    if setting.optional and text.lower() == "none":
        return None
    if setting.kind is bool:
        lowered = text.lower()
        return check(setting, True if lowered in TRUE else False if lowered in FALSE else text)
    return check(setting, text)


def add_arguments(parser: Any, settings: dict[str, Setting], defaults: dict[str, str] | None = None) -> None:
    """One ``argparse`` flag per setting (``Setting.flag``), typed and checked as :func:`parse` reads it;
    ``defaults`` words a default a number cannot say (e.g. "the model's")."""
    for name, setting in settings.items():
        default = (defaults or {}).get(name, plain_default(setting.default))
        described = f"{setting.option.help[:1].lower()}{setting.option.help[1:].rstrip('.')} (default: {default})"
        if setting.kind is bool:  # an optional one also takes --no-FLAG, and None when neither is given
            action = BooleanOptionalAction if setting.optional else "store_true"
            parser.add_argument(setting.flag, dest=name, action=action, default=setting.default, help=described)
            continue
        parser.add_argument(
            setting.flag, dest=name, type=_argument_type(setting), default=setting.default, help=described,
            choices=setting.option.choices, metavar=None if setting.option.choices else name.split("_")[-1].upper(),
        )  # fmt: skip


def _argument_type(setting: Setting) -> Any:
    import argparse

    def convert(text: str) -> Any:
        try:
            return parse(setting, text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from error

    convert.__name__ = setting.option.label  # argparse names the type in its "invalid ..." message
    return convert


def read(config_type: type | None, items: Iterable[str], owner: str) -> dict[str, Any]:
    """``["iterations=2", "norm=l1,prior_weight=0.2"]`` -> checked keyword options of ``config_type``.

    The one option syntax of every front end: ``KEY=VALUE``, several joined by commas; ``owner`` names what takes
    them (e.g. "method 'rnri'") in the errors.
    """
    settings = settings_of(config_type) if config_type is not None else {}
    options: dict[str, Any] = {}
    for pair in (p.strip() for item in items for p in item.split(",") if p.strip()):
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"an option is KEY=VALUE, got {pair!r}")
        if key not in settings:
            known = ", ".join(settings) or "none"
            raise ValueError(f"{owner} has no option {key!r}; its options: {known}")
        options[key] = parse(settings[key], text)
    return options


def describe(config_type: type | None) -> str:
    """The options of ``config_type`` with their defaults, ``iterations=1, norm=l2``; for a command's help."""
    if config_type is None:
        return "none"
    return ", ".join(f"{s.name}={plain_default(s.default)}" for s in settings_of(config_type).values())


def explain(setting: Setting) -> str:
    """One line for an API's documentation: label, what it does, what it accepts and its default."""
    opt = setting.option
    if setting.kind is bool:
        accepts = "true or false"
    elif setting.kind is str:
        accepts = f"one of {', '.join(opt.choices)}" if opt.choices else "a string"
    else:
        accepts = ("a whole number" if setting.kind is int else "a number") + _range(opt.low, opt.high)
    default = "the backbone's" if setting.default is None else plain_default(setting.default) or "empty"
    return f"{opt.label}. {opt.help} Takes {accepts}; default {default}."


def plain_default(value: Any) -> str:
    return plain(value) if isinstance(value, int | float) and not isinstance(value, bool) else str(value).lower()
