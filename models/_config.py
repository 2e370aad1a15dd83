"""Strict construction of frozen config dataclasses from plain dicts.

Hyper-parameters arrive as dicts (CLI, YAML, MLflow params, checkpoints). They are turned
into a frozen dataclass here: unknown keys and wrong types are errors that name the key,
the expected type and the valid keys; nothing is silently ignored or guessed.
"""

from __future__ import annotations

import numbers
import types
import typing
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

C = TypeVar("C")


class ConfigError(ValueError, TypeError):
    """Hyper-parameters that do not fit their config dataclass (unknown key, bad type or value)."""


def config_from_dict(cls: type[C], params: Mapping[str, Any] | None, *, what: str) -> C:
    """Build the frozen dataclass `cls` from `params`, strictly.

    Args:
        cls: a dataclass whose fields are annotated with bool, int, float, str,
            tuple[int, ...] or `X | None` of those.
        params: the overrides; missing keys take the dataclass defaults.
        what: a name for error messages, e.g. "architecture 'deep'".
    Lists are accepted for tuple fields and ints for float fields (JSON/YAML have no
    tuples and write 1 for 1.0); everything else must have the annotated type.
    """
    assert is_dataclass(cls), cls
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"{what}: hyper-parameters must be a dict, got {type(params).__name__}")
    valid = [f.name for f in fields(cls)]
    unknown = sorted(k for k in params if k not in valid)
    if unknown:
        raise ConfigError(f"{what}: unknown hyper-parameter(s) {unknown}; valid keys: {valid}")
    hints = typing.get_type_hints(cls)
    kwargs = {key: _coerce(value, hints[key], f"{what}: '{key}'") for key, value in params.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # raised by the dataclass's own __post_init__ checks
        raise ConfigError(f"{what}: {exc}") from exc


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError:
                pass
        raise _type_error(where, hint, value)
    if origin is tuple:
        item_type = typing.get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise _type_error(where, hint, value)
        return tuple(_coerce(v, item_type, where) for v in value)
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    elif hint is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - a config annotated with a type this helper does not know
        raise TypeError(f"{where}: unsupported config annotation {hint!r}")
    if not ok:
        raise _type_error(where, hint, value)
    return hint(value)


def _type_error(where: str, hint: Any, value: Any) -> ConfigError:
    expected = str(hint) if typing.get_args(hint) else hint.__name__
    return ConfigError(f"{where} expected {expected}, got {value!r} ({type(value).__name__})")
