"""A contract's fields as plain descriptions: what decoders, Arrow columns and tables derive from.

The pydantic model is the one source of a record's shape. The block decoder
(msgspec), the Arrow columns and the table columns are made from
:func:`field_shapes`, so a field added to a contract reaches each of them or
fails loudly where one cannot follow. A field whose type or constraint this
module cannot describe raises :class:`UnsupportedField` naming it: better no
import at all than a decoder or a column that silently disagrees with the contract.

Constraints a model keeps in validators (``@field_validator``,
``@model_validator``) are code, not shape: they are not described here.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import AwareDatetime, BaseModel, Strict
from pydantic.fields import FieldInfo

# The constraints every consumer of a shape can enforce the way pydantic does
# (their names are those of pydantic's Field and of msgspec.Meta alike).
_BOUNDS = (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt,
           annotated_types.MinLen, annotated_types.MaxLen, annotated_types.MultipleOf)
_SCALARS = (str, int, float, bool)


class UnsupportedField(TypeError):
    """A contract field whose type or constraint has no description here (the message names it)."""


@dataclass(frozen=True, slots=True)
class FieldShape:
    """One field of a contract.

    ``kind`` is ``str``, ``int``, ``float``, ``bool``, ``datetime`` (always
    timezone-aware) or ``dict`` (a mapping of str to str). ``literals`` lists the
    only values allowed, when the type is a ``Literal``. ``constraints`` are
    keyword arguments as pydantic's ``Field`` and ``msgspec.Meta`` both spell
    them (``ge``, ``le``, ``min_length``, ``pattern``...). ``required`` is as pydantic sees it
    (a default factory makes a field optional in Python; the wire may still
    require it).
    """

    name: str
    kind: type
    nullable: bool
    required: bool
    literals: tuple[Any, ...] | None = None
    constraints: Mapping[str, Any] = field(default_factory=dict)

    @property
    def constant(self) -> bool:
        """Whether the type admits one value only (``Literal[1]``): such a field carries nothing per record."""
        return self.literals is not None and len(self.literals) == 1 and not self.nullable


def field_shapes(model: type[BaseModel]) -> tuple[FieldShape, ...]:
    """Every field of ``model``, in declaration order."""
    return tuple(_shape(model, name, info) for name, info in model.model_fields.items())


def _shape(model: type[BaseModel], name: str, info: FieldInfo) -> FieldShape:
    where = f"{model.__name__}.{name}"
    annotation, nullable, metadata = _unwrap(info.annotation, list(info.metadata), where)
    constraints: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, Strict):
            continue  # msgspec is always strict: a stricter decoder only sends more to pydantic
        if _is_pattern(item):
            constraints["pattern"] = item.pattern  # both anchor nothing themselves: the pattern carries ^...$
            continue
        if not isinstance(item, _BOUNDS):
            raise UnsupportedField(f"{where}: constraint {item!r} is not described by spendstream/schemas/shape.py")
        constraints.update((bound.name, getattr(item, bound.name)) for bound in dataclasses.fields(item))
    literals = None
    if get_origin(annotation) is Literal:
        literals = get_args(annotation)
        kinds = {type(value) for value in literals}
        if len(kinds) != 1 or not kinds <= set(_SCALARS):
            raise UnsupportedField(f"{where}: a Literal must list values of one scalar type, not {literals!r}")
        kind: type = kinds.pop()
    elif annotation is AwareDatetime:
        kind = datetime
    elif get_origin(annotation) is dict and get_args(annotation) == (str, str):
        kind = dict
    elif annotation in _SCALARS:
        kind = annotation
    else:
        raise UnsupportedField(f"{where}: type {annotation!r} is not described by spendstream/schemas/shape.py "
                               "(str, int, float, bool, AwareDatetime, a Literal, dict[str, str], or one of "
                               "those | None)")
    return FieldShape(name=name, kind=kind, nullable=nullable, required=info.is_required(), literals=literals,
                      constraints=types.MappingProxyType(constraints))


def _is_pattern(item: Any) -> bool:
    """Whether ``item`` is pydantic's metadata for ``Field(pattern=...)`` and nothing else."""
    return type(item).__name__ == "_PydanticGeneralMetadata" and set(vars(item)) == {"pattern"}


def _unwrap(annotation: Any, metadata: list[Any], where: str) -> tuple[Any, bool, list[Any]]:
    """The annotation without ``Annotated`` and ``| None`` layers, whether None is allowed, and all constraints."""
    nullable = False
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation, *extra = get_args(annotation)
            for item in extra:
                metadata.extend(item.metadata if isinstance(item, FieldInfo) else [item])
        elif origin in (Union, types.UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                raise UnsupportedField(f"{where}: a union other than `X | None` ({annotation!r}) has no one shape")
            annotation, nullable = members[0], True
        else:
            return annotation, nullable, metadata
