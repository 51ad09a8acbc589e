"""One GpuSample from what a scrape read, keeping every field that is valid.

An engine that publishes one nonsensical gauge (a percentage where a fraction is
expected, ``1.0000001``, NaN) must cost that field, not the sample and not the
exporter loop: the field is dropped (absent, as an unread value is), counted by
name, and the sample carries how many were dropped (``dropped_readings``).
Only a sample whose required fields are wrong is not built at all.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from spendstream.schemas.gpu import GpuSample

log = logging.getLogger(__name__)

_REQUIRED = frozenset(name for name, f in GpuSample.model_fields.items() if f.is_required())


class InvalidSample(ValueError):
    """The sample's required fields (interval, deployment) are themselves invalid."""


def build_sample(fields: Mapping[str, Any], dropped: Counter[str]) -> GpuSample:
    """``GpuSample(**fields)`` minus the fields that fail validation; each one is added to ``dropped``."""
    values = dict(fields)
    bad: list[str] = []
    for _ in range(len(values) + 1):  # each round drops at least one field, or returns
        try:
            sample = GpuSample(**values, dropped_readings=len(bad) if bad else None)
        except ValidationError as exc:
            failing = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
            if not failing or failing & _REQUIRED:
                raise InvalidSample(f"GpuSample for {values.get('deployment')!r} is invalid: {exc}") from exc
            for name in sorted(failing):
                _count(dropped, name, values.pop(name, None))
                bad.append(name)
            continue
        return sample
    raise InvalidSample(f"GpuSample for {values.get('deployment')!r}: could not drop its way to a valid sample")


def _count(dropped: Counter[str], name: str, value: object) -> None:
    dropped[name] += 1
    n = dropped[name]
    if n & (n - 1) == 0:  # 1st, 2nd, 4th, 8th…: the log line is rate-limited, the count is not
        log.warning("dropped out-of-range reading %s=%r (%d so far); the rest of the sample is kept", name, value, n)
