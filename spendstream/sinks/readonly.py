"""Telling a read from a write, by ClickHouse's own parser (``EXPLAIN AST``), not by a regex.

``spendstream sql`` and the worker's query endpoint run reads only unless told
``--write``: SELECT (without ``INTO OUTFILE``), SHOW, DESCRIBE, EXPLAIN and EXISTS.
"""

from __future__ import annotations

from typing import Any, Protocol

from spendstream.sinks.store import StoreError

_READS = ("SelectWithUnionQuery", "SelectIntersectExceptQuery", "Show", "DescribeQuery", "Explain", "Exists")


class WriteRefused(StoreError):
    """A statement that would change something, sent down the read-only path."""


class _Querier(Protocol):
    def query_text(self, sql: str, params: dict[str, Any] | None = None, fmt: str = "PrettyCompact") -> str: ...


def check_read_only(querier: _Querier, sql: str, params: dict[str, Any] | None = None) -> None:
    """Raise WriteRefused unless ``sql`` only reads. Parse errors surface as the StoreError they are."""
    ast = querier.query_text("EXPLAIN AST " + sql, params, "TSVRaw").splitlines()
    top = ast[0].strip() if ast else ""
    writes_file = top.startswith("SelectWithUnionQuery") and any(
        line.startswith(" Literal") for line in ast[1:])  # a top-level literal is an INTO OUTFILE target
    if not top.startswith(_READS) or writes_file:
        kind = "SELECT … INTO OUTFILE" if writes_file else top.split(" ")[0]
        raise WriteRefused(f"read-only: this statement ({kind}) would change something; pass --write to run it")
