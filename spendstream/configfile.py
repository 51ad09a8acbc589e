"""Operator-written YAML/JSON files (overrides, deployments), validated with errors that say where.

A mistake is reported as ``file:line: field: what is wrong`` for every error at
once, and numbers are read as exact ``Decimal`` (``2.5`` never becomes a float).
"""

from __future__ import annotations

from datetime import date, datetime, time, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigFileError(ValueError):
    """The file is unusable; the message names file, line and field."""


def load_model(path: Path, model: type[M], what: str) -> tuple[M | None, str]:
    """(the validated file, or None when it is empty; its text). ``what`` names the file in errors."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read the {what}: {exc.strerror}") from exc
    try:
        root = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigFileError(f"{where}: not valid YAML/JSON: {getattr(exc, 'problem', exc)}") from exc
    if data is None:
        return None, text
    try:
        return model.model_validate(data), text
    except ValidationError as exc:
        raise ConfigFileError("\n".join(_describe(path, root, e) for e in exc.errors(include_url=False))) from exc


def _describe(path: Path, root: yaml.Node | None, error: Any) -> str:
    loc = [part for part in error["loc"] if part not in ("function-after", "function-before")]
    node = root
    for part in loc:  # walk to the deepest node that exists, for its line
        child = _child(node, part)
        if child is None:
            break
        node = child
    line = node.start_mark.line + 1 if node is not None else 1
    field = ".".join(str(part) for part in loc) or "file"
    return f"{path}:{line}: {field}: {error['msg']}"


def _child(node: yaml.Node | None, part: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == part:
                return value
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return node.value[part]
    return None


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads numbers as exact Decimals."""


def _decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal:
    return Decimal(loader.construct_scalar(node).replace("_", ""))


_Loader.add_constructor("tag:yaml.org,2002:float", _decimal)


def utc_instant(value: Any) -> Any:
    """A file's date or datetime as an aware UTC datetime (a pydantic ``mode="before"`` validator's body).

    JSON and YAML text is ISO: a date (midnight UTC) or a datetime with its zone; a naive
    datetime is refused, anything else is left for pydantic to judge.
    """
    if isinstance(value, str):  # JSON has no dates: ISO text, a date or a datetime with zone
        try:
            value = date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"not an ISO date or datetime: {value!r}") from exc
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a datetime needs a time zone, e.g. 2026-01-01T00:00:00Z")
        return value.astimezone(timezone.utc)
    if isinstance(value, date):
        return datetime.combine(value, time(0), timezone.utc)
    return value


def known_zone(value: str, *, example: str = "") -> str:
    """``value`` if it names an IANA time zone; ValueError saying so otherwise."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r}{example}") from exc
    return value
