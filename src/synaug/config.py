"""Configs are data: YAML is parsed with ``safe_load`` and validated by pydantic models that
forbid unknown keys, so a misspelled key or a wrong type is a one-line error, never code."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Type, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import SynaugError

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Base for every config section: unknown keys, lossy coercions and non-finite numbers
    (``nan``, ``inf``) are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


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


def validate(model: Type[M], data: dict, where: str = "config") -> M:
    """Build ``model`` from ``data``; the first validation problem becomes one line."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            msg = f"{where}: unknown key {loc!r}"
            allowed = _allowed_keys(model, err["loc"][:-1])
            if allowed:
                msg += f" (allowed: {', '.join(sorted(allowed))})"
        else:
            msg = f"{where}: {loc}: {err['msg']} (got {err.get('input')!r})"
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


def load(model: Type[M], path: str | Path | None = None, overrides: dict | None = None) -> M:
    """Load ``model`` from a YAML file (optional) with dotted-key ``overrides`` applied."""
    data = read_yaml(path) if path is not None else {}
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    return validate(model, data, where=str(path) if path else "config")


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
