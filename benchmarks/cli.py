"""Presets and command lines: every experiment's presets are frozen dataclasses, one per name,
and every field is a flag that overrides it, the same way in every experiment.

``--preset NAME`` picks the preset; ``--some-field VALUE`` replaces its
``some_field``. The flag's type comes from the field's annotation: ``int``,
``float``, ``str``, ``bool`` (``--flag``/``--no-flag``), ``X | None`` (the word
``none`` for None) and ``tuple[X, ...]`` (several values, space- or
comma-separated: ``--depths 1 2 4`` = ``--depths 1,2,4``; a choice whose name
holds a comma is still one value). A field's metadata
may add ``help``, ``choices``, ``parse`` (the parser of one value),
``aliases`` (more flag names) and ``flag=False`` (no flag). A field named
``preset`` (give it ``flag=False``) records the preset's name::

  @dataclasses.dataclass(frozen=True)
  class Config:
      epochs: int
      depths: tuple[int, ...] = dataclasses.field(metadata={"help": "e.g. 1,10,20"})

  parser = preset_parser("benchmarks.depth", __doc__, PRESETS, default="quick")
  config = config_from_args(parser, parser.parse_args(argv), PRESETS)

A preset may check itself in ``__post_init__`` (raising ValueError): a bad
combination of flags is then a command-line error.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any


def _none_or(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    return lambda text: None if text.strip().lower() == "none" else parse(text)


def _checked(parse: Callable[[str], Any], choices) -> Callable[[str], Any]:
    if not choices:
        return parse

    def parse_choice(text: str):
        value = parse(text)
        if value not in choices:
            raise argparse.ArgumentTypeError(f"{value!r} is not one of {tuple(choices)}")
        return value

    return parse_choice


def _value_parser(annotation, metadata) -> tuple[Callable[[str], Any], bool]:
    """(parser of one value, whether the field is a tuple of such values)."""
    is_tuple = typing.get_origin(annotation) is tuple
    if is_tuple:
        annotation = typing.get_args(annotation)[0]
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional, annotation = len(members) < len(typing.get_args(annotation)), members[0]
    parse = metadata.get("parse", annotation if annotation in (int, float, str) else str)
    parse = _checked(parse, metadata.get("choices"))
    return (_none_or(parse) if optional else parse), is_tuple


class _Concatenate(argparse.Action):
    """Gathers ``--flag 1,2 3`` into the tuple (1, 2, 3)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, tuple(item for group in values for item in group))


def _split(parse: Callable[[str], Any], choices=None) -> Callable[[str], tuple]:
    """Splits ``a,b`` into values; with `choices`, a choice whose name holds a comma stays whole
    (the longest run of comma-separated pieces that names a choice is one value)."""

    def split(text: str) -> tuple:
        pieces, items, start = text.split(","), [], 0
        while start < len(pieces):
            end = start + 1
            for stop in range(len(pieces), start + 1, -1) if choices else ():
                if ",".join(pieces[start:stop]).strip() in choices:
                    end = stop
                    break
            items.append(",".join(pieces[start:end]).strip())
            start = end
        return tuple(parse(item) for item in items if item)

    return split


def _help(field: dataclasses.Field) -> str | None:
    parts = [field.metadata.get("help")]
    if field.metadata.get("choices"):
        parts.append("one of " + ", ".join(map(str, field.metadata["choices"])))
    return "; ".join(part for part in parts if part) or None


def add_preset_arguments(parser: argparse.ArgumentParser, presets: Mapping[str, Any], default: str):
    """Adds ``--preset`` and one flag per field of the presets' dataclass to `parser`."""
    parser.add_argument("--preset", choices=tuple(presets), default=default)
    config_type = type(presets[default])
    hints = typing.get_type_hints(config_type)
    for field in dataclasses.fields(config_type):
        metadata = field.metadata
        if metadata.get("flag", True) is False:
            continue
        names = ["--" + field.name.replace("_", "-"), *metadata.get("aliases", ())]
        kwargs: dict[str, Any] = {"dest": field.name, "default": None, "help": _help(field)}
        if hints[field.name] in (bool, bool | None):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            parse, is_tuple = _value_parser(hints[field.name], metadata)
            if is_tuple:
                metavar = field.name.rsplit("_", 1)[-1].upper()
                split = _split(parse, metadata.get("choices"))
                kwargs.update(nargs="+", type=split, action=_Concatenate, metavar=metavar)
            else:
                kwargs["type"] = parse
        parser.add_argument(*names, **kwargs)


def preset_parser(
    module: str, description: str | None, presets: Mapping[str, Any], default: str
) -> argparse.ArgumentParser:
    """An argument parser for ``python -m <module>`` with `add_preset_arguments`."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {module}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_preset_arguments(parser, presets, default)
    return parser


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace, presets):
    """The chosen preset with every flag given on the command line replacing its field."""
    preset = presets[args.preset]
    overrides = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(preset)
        if getattr(args, field.name, None) is not None
    }
    if "preset" in {field.name for field in dataclasses.fields(preset)}:
        overrides["preset"] = args.preset
    try:
        return dataclasses.replace(preset, **overrides)
    except ValueError as error:
        parser.error(str(error))


def from_json(config_type, saved: Mapping[str, Any]):
    """A `config_type` from its JSON form (lists back to tuples; unknown keys ignored)."""
    names = {field.name for field in dataclasses.fields(config_type)}
    return config_type(**{k: _tuples(v) for k, v in saved.items() if k in names})


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
