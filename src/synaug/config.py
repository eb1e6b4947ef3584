"""Configs are data: YAML is parsed with ``safe_load`` and validated by pydantic models that
forbid unknown keys, so a misspelled key or a wrong type is a one-line error, never code."""
from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, Type, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from .errors import SynaugError

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Base for every config section: unknown keys, lossy coercions and non-finite numbers
    (``nan``, ``inf``) are errors.

    YAML 1.1 (PyYAML, and ``--set`` values) reads ``off``/``on``/``no``/``yes`` as booleans: a
    boolean given to a key that takes only strings (a ``Literal`` such as ``amp``) is read back
    as the documented spelling it stands for, so ``amp: off`` and ``--set amp=off`` work as typed.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _yaml_booleans(cls, data):
        if not isinstance(data, dict):
            return data
        fixed = {k: _literal_spelling(cls.model_fields[k].annotation, v) for k, v in data.items()
                 if isinstance(v, bool) and k in cls.model_fields}
        return {**data, **{k: v for k, v in fixed.items() if v is not None}} if fixed else data


_YAML_BOOL_SPELLINGS = {True: ("on", "yes", "true", "y"), False: ("off", "no", "false", "n")}


def _literal_spelling(annotation, value: bool) -> str | None:
    """The string of ``annotation``'s ``Literal`` that YAML 1.1 read as ``value`` (``"off"`` for
    False), when the annotation takes no boolean itself; else None."""
    words: set[str] = set()
    stack = [annotation]
    while stack:
        a = stack.pop()
        origin = get_origin(a)
        if a is bool:
            return None
        if origin is Literal:
            if any(isinstance(x, bool) for x in get_args(a)):
                return None
            words |= {x for x in get_args(a) if isinstance(x, str)}
        elif origin in (Union, types.UnionType):
            stack.extend(get_args(a))
    lower = {w.lower(): w for w in words}
    return next((lower[w] for w in _YAML_BOOL_SPELLINGS[value] if w in lower), None)


def drop_defaults(model: BaseModel, data: Any, keys: tuple[str, ...]) -> Any:
    """``data`` (a dump of ``model``) without the ``keys`` whose value is the field's default.

    For keys added after runs were cached: a dump is what stage fingerprints, resumption
    checks and resolved configs are made of, so a new key left at its default must not show
    in it (runs made before the key existed stay up to date). Use from a wrap
    ``model_serializer``.
    """
    if not isinstance(data, dict):
        return data
    for k in keys:
        field = type(model).model_fields[k]
        default = field.default_factory() if field.default_factory is not None else field.default
        if k in data and getattr(model, k) == default:
            del data[k]
    return data


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SynaugError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SynaugError(f"config {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SynaugError(f"config {path} must be a mapping at the top level")
    return data


def validate(model: Type[M], data: dict, where: str = "config", overrides: Sequence[str] = ()) -> M:
    """Build ``model`` from ``data``; the first validation problem becomes one line.

    ``overrides`` are the ``--set KEY=VALUE`` texts applied to ``data``: a problem under one of
    their keys names that ``--set``, not the file (``where``)."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        where = _blame(loc, overrides) or where
        if err["type"] == "extra_forbidden":
            msg = f"{where}: unknown key {loc!r}"
            allowed = _allowed_keys(model, err["loc"][:-1])
            if allowed:
                msg += f" (allowed: {', '.join(sorted(allowed))})"
        else:
            msg = f"{where}: {loc}: {err['msg']} (got {err.get('input')!r})"
            if isinstance(err.get("input"), bool) and err["type"] == "literal_error":
                msg += "; YAML reads on/off/yes/no as true/false: quote the value, e.g. 'on'"
        raise SynaugError(msg) from None


def _allowed_keys(model: Type[BaseModel], loc: tuple) -> list[str]:
    cur: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(cur, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        cur = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)
                    and issubclass(a, BaseModel)), ann)
    return list(getattr(cur, "model_fields", {}).keys())


def _blame(loc: str, overrides: Sequence[str]) -> str | None:
    """The ``--set`` among ``overrides`` that wrote the key at dotted ``loc`` (or below / above it)."""
    for text in reversed(list(overrides)):
        key = text.split("=", 1)[0].strip()
        if loc == key or loc.startswith(key + ".") or key.startswith(loc + "."):
            return f"--set {text}"
    return None


def load(model: Type[M], path: str | Path | None = None, overrides: Sequence[str] | Mapping | None = None) -> M:
    """Load ``model`` from a YAML file (optional) with ``--set`` style ``overrides`` applied
    (``KEY=VALUE`` texts, or a ``{dotted key: value}`` mapping).

    Relative paths in the file (the keys :func:`path_keys` finds) are resolved against the
    file's folder, the one rule of every command that reads a config; ``--set`` values are
    taken as typed (relative to the working directory).
    """
    data = {}
    if path is not None:
        data = read_yaml(path)
        resolve_paths(data, model, Path(path).resolve().parent)
    texts = apply_overrides(data, overrides)
    return validate(model, data, where=str(path) if path else "config", overrides=texts)


def apply_overrides(data: dict, overrides: Sequence[str] | Mapping | None) -> list[str]:
    """Set every override in ``data``; returns them as ``KEY=VALUE`` texts (for error messages)."""
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
        texts = [f"{k}={v}" for k, v in items]
    else:
        texts = list(overrides or [])
        items = [parse_override(t) for t in texts]
    for key, value in items:
        set_dotted(data, key, value)
    return texts


# ---------------------------------------------------------------------------- paths in config files
def path_keys(model: Type[BaseModel], prefix: str = "") -> tuple[list[str], list[str], list[str]]:
    """Dotted keys of ``model`` holding paths, in three kinds: ``PATH_KEYS`` (always paths),
    ``MAYBE_PATH_KEYS`` (a path or a name, e.g. a Hugging Face id: resolved only when the file
    exists there) and ``MAYBE_PATH_MAPS`` (mappings whose values may be paths), as each config
    section declares them (class variables), found through the nested sections."""
    out: tuple[list[str], list[str], list[str]] = ([], [], [])
    for i, attr in enumerate(("PATH_KEYS", "MAYBE_PATH_KEYS", "MAYBE_PATH_MAPS")):
        out[i].extend(prefix + k for k in getattr(model, attr, ()))
    for name, f in model.model_fields.items():
        sub = next((a for a in (f.annotation, *get_args(f.annotation)) if isinstance(a, type)
                    and issubclass(a, BaseModel)), None)
        if sub is not None:
            for mine, theirs in zip(out, path_keys(sub, f"{prefix}{name}.")):
                mine.extend(theirs)
    return out


def resolve_paths(data: dict, model: Type[BaseModel], base: Path) -> None:
    """Make the relative paths of a config file's ``data`` relative to ``base`` (its folder)."""
    paths, maybe, maps = path_keys(model)

    def section(dotted):
        cur = data
        for part in dotted.split(".")[:-1]:
            cur = cur.get(part) if isinstance(cur, dict) else None
        return cur if isinstance(cur, dict) else None

    def fix(sec, key, maybe_name):
        v = sec.get(key)
        if not isinstance(v, str) or not v or v == "heldout" and key == "manifest":
            return
        p = Path(v).expanduser()
        if p.is_absolute():
            sec[key] = str(p)
        elif not maybe_name or (base / p).exists():
            sec[key] = str((base / p).resolve())  # no "cfg/../" left in messages and reports

    for dotted in paths + maybe:
        sec = section(dotted)
        if sec is not None:
            fix(sec, dotted.rsplit(".", 1)[-1], dotted in maybe)
    for dotted in maps:
        sec = section(dotted + ".x")
        if sec is not None:
            for k in list(sec):
                fix(sec, k, True)


def set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    cur = data
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
        if not isinstance(cur, dict):
            raise SynaugError(f"override {key!r}: {p!r} is not a section")
    cur[parts[-1]] = value


def finite_float(text: str) -> float:
    """argparse ``type=`` for a float option that must be a finite number (no nan / inf)."""
    import argparse
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", yaml-parsed value)."""
    if "=" not in text:
        raise SynaugError(f"override {text!r} must look like key=value")
    k, v = text.split("=", 1)
    try:
        return k.strip(), yaml.safe_load(v)
    except yaml.YAMLError as e:  # includes tags such as !!python/object, which safe_load refuses
        raise SynaugError(f"override {text!r}: value is not valid YAML: {str(e).splitlines()[0]}") from None


def dump(model: BaseModel) -> dict:
    return json.loads(model.model_dump_json())


def save_resolved(model: BaseModel, path: str | Path) -> None:
    from .io import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(dump(model), sort_keys=False))
