"""Non-token charges: per-call tool fees and per-request fees, each its own cost line.

A usage event reports how many server-side tool calls its model call made
(``web_search_calls``...) and is itself one request. The catalog prices some of
them per thousand (Anthropic and OpenAI web search, OpenAI file search,
Perplexity's request fee); overrides price any of them per call
(``fees_per_call``), for example OpenAI's code interpreter or a negotiated rate.

A fee kind nobody prices costs nothing: Anthropic's web fetch is billed as tokens
only. A request that failed (``status`` other than ok or invalid_output) is not
charged a request fee, as providers bill only answered requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from genai_prices.types import ModelPrice

# Each fee kind, the UsageEvent field counting it (None: every answered event is one), and the
# catalog's price key (USD per thousand), where the catalog has one.
FEE_KINDS = ("web_search", "web_fetch", "file_search", "code_execution", "request")
CALL_FIELDS = {"web_search": "web_search_calls", "web_fetch": "web_fetch_calls",
               "file_search": "file_search_calls", "code_execution": "code_execution_calls"}
CATALOG_KEYS = {"web_search": "web_searches_kcount", "file_search": "storage_searches_kcount",
                "code_execution": "code_executions_kcount", "request": "requests_kcount"}
BILLED_STATUSES = ("ok", "invalid_output")

Fees = tuple[Decimal, ...]  # USD per call, one per FEE_KINDS
NO_FEES: Fees = (Decimal(0),) * len(FEE_KINDS)


def catalog_fees(price: ModelPrice) -> Fees:
    """The per-call fees of a catalog price (its per-thousand prices divided by 1,000)."""
    return tuple(Decimal(getattr(price, CATALOG_KEYS[kind], None) or 0) / 1000 if kind in CATALOG_KEYS
                 else Decimal(0) for kind in FEE_KINDS)


def scaled(fees: Fees, factor: Decimal) -> Fees:
    return tuple(fee * factor for fee in fees)


def quantities(calls: dict[str, np.ndarray | None], status: Sequence[str] | pa.Array | None, n: int,
               wanted: Sequence[bool]) -> list[np.ndarray]:
    """Per event, how many of each fee kind it used; zeros for kinds not ``wanted`` (no price charges them)."""
    out = []
    for kind, want in zip(FEE_KINDS, wanted, strict=True):
        if not want:
            out.append(np.zeros(n, dtype=np.int64))
        elif kind == "request":
            if status is None:
                out.append(np.ones(n, dtype=np.int64))
            else:
                array = status if isinstance(status, pa.Array) else pa.array(status, pa.string())
                billed = pc.is_in(array, pa.array(BILLED_STATUSES))
                out.append(billed.to_numpy(zero_copy_only=False).astype(np.int64))
        else:
            column = calls.get(CALL_FIELDS[kind])
            out.append(np.zeros(n, dtype=np.int64) if column is None else np.asarray(column, dtype=np.int64))
    return out
