"""Absl flags derived from a frozen configuration dataclass, so binaries never hand-list flags.

A binary defines its flags from the dataclass at module level and builds the validated config
in `main`:

    from cxr_cli import config_flags
    _CONFIG = config_flags.define_from_dataclass(TrainConfig)

    def main(argv):
        config = config_flags.build_config(TrainConfig, _CONFIG, base=PROFILES[profile])

Each field becomes a flag of the same name, with the field's default as the flag's default
(or `base`'s value when a base is given). Help text and allowed values come from the field's
metadata, which every config dataclass sets with this module's one helper:

    records_dir: str = config_flags.field("data/tfrecords", "Records directory.")
    model: str = config_flags.field("resunet", "Architecture.", MODEL_NAMES)

Supported field types: bool, int, float, str, `X | None` of those, and `tuple[str, ...]`
(a comma-separated list). A field whose metadata has `"flag": False` gets no flag; one whose
`"flag"` is a string gets a flag of that name.

A configuration's values (e.g. `train_config` in a run's config.json) turn back into flags
with `flagfile_lines`, for absl's own `--flagfile=FILE` (one flag per line).
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from absl import flags

FlagHolders = dict[str, flags.FlagHolder]
# Lines of a flags file: absl reads one flag per line and skips lines starting with `#`.
FLAGFILE_COMMENT = "#"

_DEFINERS = {
    bool: flags.DEFINE_bool,
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    str: flags.DEFINE_string,
}


def field(
    default: Any, help_text: str, choices: Sequence[str] | None = None, *, flag: bool | str = True
) -> Any:
    """A config dataclass field with the help (and choices) of the flag derived from it.

    Args:
      default: the field's default, shown in `--help`.
      help_text: the flag's help.
      choices: the allowed values of a str field (an enum flag).
      flag: False: no flag; a string: the flag's name when it differs from the field's.
    """
    metadata: dict[str, Any] = {"help": help_text}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if flag is not True:
        metadata["flag"] = flag
    return dataclasses.field(default=default, metadata=metadata)


def flag_name(field: dataclasses.Field) -> str | None:
    """The name of the flag derived from `field`; None when it has none."""
    flag = field.metadata.get("flag", True)
    if flag is False:
        return None
    return flag if isinstance(flag, str) else field.name


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
        name = flag_name(field)
        if field.name in exclude or name is None:
            continue
        default = defaults.get(field.name, _default_of(field))
        holders[field.name] = _define(config_cls, field, name, default, flag_values, module_name)
    return holders


def _define(
    config_cls: type,
    field: dataclasses.Field,
    name: str,
    default: Any,
    flag_values: flags.FlagValues,
    module_name: str,
) -> flags.FlagHolder:
    """Defines the flag `name` for one field: enum, list or a plain typed flag."""
    kind, _ = _field_type(config_cls, field)
    help_text = field.metadata.get("help", field.name.replace("_", " ").capitalize() + ".")
    choices = field.metadata.get("choices")
    where = {"flag_values": flag_values, "module_name": module_name}
    if choices and kind is str:
        return flags.DEFINE_enum(name, default, list(choices), help_text, **where)
    if kind is tuple:
        return flags.DEFINE_list(name, list(default) if default is not None else None, help_text, **where)
    return _DEFINERS[kind](name, default, help_text, **where)


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


def flagfile_lines(config_cls: type, values: Mapping[str, Any] | Any) -> list[str]:
    """The flags that re-create `values` (a config or its dict, e.g. config.json's), one per line.

    For absl's `--flagfile=FILE`. Fields without a flag, keys that are not fields, and None
    values (a flag cannot carry None; every flag of an optional field defaults to None) are
    left out.

    Raises:
      TypeError: a field of a type no flag can carry.
    """
    values = _as_dict(values)
    lines = []
    for field in dataclasses.fields(config_cls):
        name = flag_name(field)
        if name is None or values.get(field.name) is None:
            continue
        kind, _ = _field_type(config_cls, field)
        value = values[field.name]
        if kind is bool:
            lines.append(f"--{name}" if value else f"--no{name}")
        elif kind is tuple:
            lines.append(f"--{name}={','.join(str(item) for item in value)}")
        else:
            lines.append(f"--{name}={value!r}" if kind is float else f"--{name}={value}")
    return lines


def write_flagfile(path: str, lines: Iterable[str], *, comment: str = "") -> None:
    """Writes `lines` to `path` for `--flagfile`, under an optional comment line."""
    with open(path, "w", encoding="utf-8") as f:
        if comment:
            f.write(f"{FLAGFILE_COMMENT} {comment}\n")
        f.writelines(line + "\n" for line in lines)
