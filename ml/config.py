"""Config dataclasses from a YAML file and ``key=value`` overrides, type-checked.

``load_config(config_file, overrides, cls)``: the dataclass's defaults, then the YAML file, then
the overrides, each parsed to the field's type; unknown keys and badly typed values are refused
with a message that names them. Every training entry point uses it with its own dataclass
(`ml.train.TrainConfig`, `ml.speedrun.SpeedrunConfig`, `ml.bench.BenchConfig`).
``config_from_argv(argv, cls, prog, manual)``: the same from a command line
``[--config FILE] key=value ...`` (``ml train``, ``ml speedrun``); a refused value is a usage error.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


def _parse_value(field_type: Any, raw: str) -> Any:
    origin = typing.get_origin(field_type)
    if origin in (typing.Union, types.UnionType):
        field_type = next(t for t in typing.get_args(field_type) if t is not type(None))
    if field_type is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {raw!r}")
    return field_type(raw)


def load_config(config_file: str | None, overrides: list[str], cls: type) -> Any:
    """Defaults, then the YAML file, then ``key=value`` overrides; unknown keys are refused."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    if config_file:
        loaded = yaml.safe_load(Path(config_file).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{config_file} must hold a mapping of config keys")
        values.update(loaded)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like key=value")
        if key not in hints:
            raise ValueError(f"unknown config key {key!r}; known keys: {', '.join(hints)}")
        try:
            values[key] = _parse_value(hints[key], raw)
        except ValueError as exc:
            raise ValueError(f"bad value for {key}: {exc}") from exc
    unknown = set(values) - set(hints)
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
    for key, value in values.items():  # YAML values are checked too
        expected = hints[key]
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            values[key] = float(value)
        elif expected is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            values[key] = str(value)  # YAML reads freeze: 3 as an int
        elif typing.get_origin(expected) is None and (
            not isinstance(value, expected) or (expected is not bool and isinstance(value, bool))
        ):
            raise ValueError(f"config key {key} must be {expected.__name__}, got {value!r}")
    return cls(**values)


def config_from_argv(
    argv: list[str], cls: type, prog: str, manual: str | None, check: Callable[[Any], object] | None = None
) -> Any:
    """``cls`` from ``[--config FILE] key=value ...`` (``load_config``), then ``check(cfg)``; a
    ValueError from either exits with the usage and its message. ``manual`` is the ``--help`` text."""
    parser = argparse.ArgumentParser(
        prog=prog, description=manual, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help=f"YAML file with {cls.__name__} fields")
    parser.add_argument("overrides", nargs="*", help=f"key=value overrides of {cls.__name__} fields")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides, cls)
        if check is not None:
            check(cfg)
    except ValueError as exc:
        parser.error(str(exc))
    return cfg
