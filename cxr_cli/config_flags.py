"""Absl flags derived from a frozen configuration dataclass, so binaries never hand-list flags.

A binary defines its flags from the dataclass at module level and builds the validated config
in `main`:

    from cxr_cli import config_flags
    _CONFIG = config_flags.define_from_dataclass(TrainConfig)

    def main(argv):
        config = config_flags.build_config(TrainConfig, _CONFIG, base=PROFILES[profile])

Each field becomes a flag of the same name, with the field's default as the flag's default
(or `base`'s value when a base is given). Help text and allowed values come from the field's
metadata: `dataclasses.field(default=..., metadata={"help": "...", "choices": (...)})`.
Supported field types: bool, int, float, str, `X | None` of those, and `tuple[str, ...]`
(a comma-separated list). A field whose metadata has `"flag": False` gets no flag.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from absl import flags

FlagHolders = dict[str, flags.FlagHolder]

_DEFINERS = {
    bool: flags.DEFINE_bool,
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    str: flags.DEFINE_string,
}


def _field_type(config_cls: type, field: dataclasses.Field) -> tuple[Any, bool]:
    """Returns (base type, optional) of a field, resolving string annotations."""
    hint = typing.get_type_hints(config_cls)[field.name]
    args = typing.get_args(hint)
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        non_none = [arg for arg in args if arg is not type(None)]
        if len(non_none) != 1:
            raise TypeError(f"{config_cls.__name__}.{field.name}: unsupported union type {hint}.")
        optional = len(non_none) != len(args)
        hint = non_none[0]
    if typing.get_origin(hint) is tuple and typing.get_args(hint)[:1] == (str,):
        return tuple, optional
    if hint not in _DEFINERS:
        raise TypeError(f"{config_cls.__name__}.{field.name}: no flag type for {hint}.")
    return hint, optional


def _default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _as_dict(base: Any) -> dict[str, Any]:
    if base is None:
        return {}
    if dataclasses.is_dataclass(base):
        return {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    return dict(base)


def _calling_module_name(depth: int = 2) -> str:
    """The module that called our caller, named as absl names it (`sys.argv[0]` for __main__)."""
    name = sys._getframe(depth).f_globals.get("__name__", "")
    return sys.argv[0] if name == "__main__" else name


def define_from_dataclass(
    config_cls: type,
    *,
    base: Any = None,
    exclude: Iterable[str] = (),
    flag_values: flags.FlagValues = flags.FLAGS,
    module_name: str | None = None,
) -> FlagHolders:
    """Defines one flag per field of `config_cls`.

    Args:
      config_cls: a dataclass type.
      base: optional instance or mapping whose values become the flags' defaults (shown in
        `--help`); fields it lacks keep the dataclass default.
      exclude: field names that get no flag (set by the binary itself).
      flag_values: where to define them (tests pass their own `flags.FlagValues()`).
      module_name: the module the flags belong to (listed by its `--help`); default: the
        calling module, so a binary's `--help` shows its config's flags.

    Returns:
      {field name: FlagHolder}.

    Raises:
      TypeError: a field of a type no flag can carry.
    """
    defaults = _as_dict(base)
    module_name = module_name or _calling_module_name()
    holders: FlagHolders = {}
    for field in dataclasses.fields(config_cls):
        if field.name in exclude or field.metadata.get("flag", True) is False:
            continue
        kind, _ = _field_type(config_cls, field)
        default = defaults.get(field.name, _default_of(field))
        help_text = field.metadata.get("help", field.name.replace("_", " ").capitalize() + ".")
        choices = field.metadata.get("choices")
        if choices and kind is str:
            holder = flags.DEFINE_enum(
                field.name,
                default,
                list(choices),
                help_text,
                flag_values=flag_values,
                module_name=module_name,
            )
        elif kind is tuple:
            holder = flags.DEFINE_list(
                field.name,
                list(default) if default is not None else None,
                help_text,
                flag_values=flag_values,
                module_name=module_name,
            )
        else:
            holder = _DEFINERS[kind](
                field.name, default, help_text, flag_values=flag_values, module_name=module_name
            )
        holders[field.name] = holder
    return holders


def explicit_values(holders: FlagHolders) -> dict[str, Any]:
    """The values of the flags given on the command line (not left at their defaults)."""
    return {name: _value(holder) for name, holder in holders.items() if holder.present}


def _value(holder: flags.FlagHolder) -> Any:
    value = holder.value
    return tuple(value) if isinstance(value, list) else value


def build_config(
    config_cls: type,
    holders: FlagHolders,
    *,
    base: Any = None,
    overrides: Mapping[str, Any] | None = None,
):
    """Builds (and so validates) a `config_cls` from parsed flags.

    Precedence, lowest first: the dataclass defaults, `base` (e.g. a named profile), the flags'
    values when `base` is None, flags given explicitly on the command line, `overrides`.

    Args:
      config_cls: the dataclass the flags were defined from.
      holders: what `define_from_dataclass` returned; flags must be parsed.
      base: optional instance or mapping (a complete profile). With a base, only explicitly
        given flags override it, so a profile is never mixed with another profile's defaults.
      overrides: values set by the binary itself (e.g. excluded fields).

    Returns:
      The config instance; its own validation raises ValueError naming the field.
    """
    if base is None:
        values = {name: _value(holder) for name, holder in holders.items()}
    else:
        values = _as_dict(base)
        values.update(explicit_values(holders))
    values.update(overrides or {})
    return config_cls(**values)
