"""FOCUS as text: decimals are plain decimal numbers however small (FOCUS's numeric format has no exponent)."""

from __future__ import annotations

import re
from decimal import Decimal

import pyarrow as pa

from spendstream.focus import MONEY, focus_text_numbers

NUMERIC = re.compile(r"^-?\d+(\.\d+)?$")


def test_small_and_negative_decimals_are_written_without_an_exponent() -> None:
    values = [Decimal("0.0000006"), Decimal("1.5"), None, Decimal("-0.00000001"),
              Decimal("123456789.000000000000000001")]
    table = pa.table({"EffectiveCost": pa.array(values, MONEY), "x_Team": pa.array(["a", "b", "c", "d", "e"])})
    assert str(pa.array(values, MONEY).cast(pa.string())[0]) == "6.00000000000E-7"  # what Arrow writes alone
    text = focus_text_numbers(table)
    written = text["EffectiveCost"].to_pylist()
    assert all(NUMERIC.match(v) for v in written if v is not None), written
    assert [None if v is None else Decimal(v) for v in written] == values  # the same numbers, exactly
    assert written[2] is None and text["x_Team"].to_pylist() == ["a", "b", "c", "d", "e"]
