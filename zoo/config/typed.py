"""Build dataclasses from untyped data (YAML mappings, `--key=value` strings) and say exactly what is wrong.

Config is validated once, at the edge: everything after this module receives typed objects. Errors name the
file, the dotted key path and what is allowed, so a user can fix a runs.yaml without reading code.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A user error in a config file or command line; the CLI prints it and exits with code 2."""


@dataclass(frozen=True)
class AdaptedDefault:
    """A default that could not hold beside the values the user set, and what was used instead.

    A dataclass offers these through a classmethod `adapt_defaults(given) -> {name: (value, why)}`, called by
    `from_dict` with the keys the user gave (only fields the user left out may adapt; one the user set that
    conflicts stays an error)."""

    key: str  # the full dotted key, e.g. "budget.warmup_epochs"
    default: Any
    value: Any
    why: str  # why the default cannot hold, e.g. "is not shorter than epochs (1)"

    def __str__(self) -> str:
        return (f"{self.key}: not set, and its default {self.default!r} {self.why}, so {self.value!r} is used "
                f"(set {self.key} to choose)")


def _where(source: str, path: str) -> str:
    return f"{source}: {path}" if path else source


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def parse_scalar_text(text: str) -> Any:
    """Interpret a command-line value the way the W&B agent writes it (Python `str()` of the value)."""
    lowered = text.strip()
    if lowered in ("None", "null", "none", "~"):
        return None
    if lowered in ("True", "true"):
        return True
    if lowered in ("False", "false"):
        return False
    try:
        return ast.literal_eval(lowered)
    except (ValueError, SyntaxError):
        return text


def coerce(value: Any, tp: Any, source: str, path: str, notes: list[AdaptedDefault] | None = None) -> Any:
    """Check (and gently convert) `value` against the type annotation `tp` (`notes` collects adapted defaults)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, source, path, notes)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{_where(source, path)}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(
                f"{_where(source, path)}: {value!r} is not allowed (allowed: {', '.join(map(repr, allowed))})"
            )
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        shorthand = getattr(tp, "expand_shorthand", None)  # a type with short spellings (`init: timm`)
        if shorthand is not None:
            value = shorthand(value, source, path)
        return from_dict(tp, value, source, path, notes=notes)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = parse_scalar_text(value)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{_where(source, path)}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{_where(source, path)}: expected {len(args)} items ({_type_name(tp)}), "
                                  f"got {len(value)}: {value!r}")
            return tuple(coerce(v, a, source, f"{path}[{i}]", notes) for i, (a, v) in enumerate(zip(args, value)))
        item_type = args[0] if args else Any
        items = [coerce(v, item_type, source, f"{path}[{i}]", notes) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{_where(source, path)}: expected a mapping, got {value!r}")
        key_type, value_type = get_args(tp) or (Any, Any)
        return {
            coerce(k, key_type, source, f"{path}.{k}"): coerce(v, value_type, source, f"{path}.{k}", notes)
            for k, v in value.items()
        }
    if tp is bool:
        if isinstance(value, str):
            value = parse_scalar_text(value)
        if not isinstance(value, bool):
            raise ConfigError(f"{_where(source, path)}: expected true/false, got {value!r}")
        return value
    if tp in (int, float):
        if isinstance(value, str):
            value = parse_scalar_text(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{_where(source, path)}: expected a number ({tp.__name__}), got {value!r}")
        if tp is int and float(value) != int(value):
            raise ConfigError(f"{_where(source, path)}: expected an integer, got {value!r}")
        return tp(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{_where(source, path)}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} at {path}")  # a programming error, not a user one


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    # Evaluating string annotations costs ~1 ms per class: a results store of a few hundred runs is read every
    # second by a matrix's progress view and under the claims lock, each record's config through here.
    return get_type_hints(cls)


def from_dict(cls: type, data: Any, source: str, path: str = "", *,
              notes: list[AdaptedDefault] | None = None) -> Any:
    """Build dataclass `cls` from a mapping; unknown keys and missing required keys are ConfigErrors.

    Defaults the class adapts to the given values (`adapt_defaults`) are appended to `notes`, and stored in a
    non-init field `adapted_defaults` where the class has one (`MatrixConfig`: the plan prints them)."""
    collected: list[AdaptedDefault] = [] if notes is None else notes
    first = len(collected)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{_where(source, path)}: expected a mapping, got {data!r}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(f"{_where(source, key)}: unknown key (allowed: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, field in fields.items():
        key = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = coerce(data[name], hints[name], source, key, collected)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_where(source, key)}: required key is missing (expected {_type_name(hints[name])})")
    adapt = getattr(cls, "adapt_defaults", None)
    for name, (value, why) in (adapt(kwargs) if adapt is not None else {}).items():
        kwargs[name] = value
        collected.append(AdaptedDefault(f"{path}.{name}" if path else name, fields[name].default, value, why))
    obj = cls(**kwargs)
    if any(f.name == "adapted_defaults" and not f.init for f in dataclasses.fields(cls)):
        object.__setattr__(obj, "adapted_defaults", tuple(collected[first:]))
    check = getattr(obj, "validate", None)
    if check is not None:
        check(source, path)
    return obj


def to_dict(obj: Any) -> Any:
    """Plain-data view of a dataclass tree (tuples become lists) for hashing, logging and JSON. Fields that are not
    init arguments (derived, such as `MatrixConfig.adapted_defaults`) are left out: `from_dict` reads it back."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """Set `a.b.c = value` inside nested dicts, creating levels as needed."""
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {} if child is None else {"name": child}
            node[part] = child
        node = child
    node[leaf] = value


class Checker:
    """Range and consistency checks of one dataclass: `require(ok, key, what)` raises a ConfigError naming the file,
    the dotted key and what is allowed, with the value found."""

    def __init__(self, obj: Any, source: str, path: str):
        self.obj, self.source, self.prefix = obj, source, f"{path}." if path else ""

    def require(self, ok: bool, key: str, allowed: str, value: Any = dataclasses.MISSING) -> None:
        if not ok:
            found = getattr(self.obj, key.split("[")[0].split(".")[0], None) if value is dataclasses.MISSING else value
            raise ConfigError(f"{self.source}: {self.prefix}{key}: must be {allowed}, got {found!r}")

    def positive(self, *keys: str) -> None:
        for key in keys:
            value = getattr(self.obj, key)
            self.require(value is None or value > 0, key, "> 0")

    def non_negative(self, *keys: str) -> None:
        for key in keys:
            value = getattr(self.obj, key)
            self.require(value is None or value >= 0, key, ">= 0")

    def unique(self, key: str) -> None:
        values = list(getattr(self.obj, key))
        duplicates = sorted({str(v) for v in values if values.count(v) > 1})
        self.require(not duplicates, key, "free of duplicates", duplicates)
