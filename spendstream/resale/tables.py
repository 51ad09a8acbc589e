"""The price book in ClickHouse: ``pricebook_loads``, ``pricebook_rules``, ``pricebook_customers``.

Loading stores the book under its version (the file's digest) and makes it current; the
tables keep every version loaded, so loading the same file twice changes nothing but which
book is current, and an older book can be made current again by loading it. The tables
and the ``customer_margin`` view are made by the migration "money II" (sinks/billing.py).
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import orjson
import pyarrow as pa

from spendstream.resale.pricebook import Meter, PriceBook, glob_regex
from spendstream.sinks.rows import MONEY, TS
from spendstream.sinks.store import Store, TextQuerier, query_result

MILLION = Decimal(1_000_000)
_MARKUP = pa.decimal128(18, 6)


def store_pricebook(store: Store, book: PriceBook, *, now: datetime | None = None) -> None:
    """Store ``book`` and make it the current one (the rules, the customers, then the load that names it)."""
    loaded_at = now or datetime.now(timezone.utc)
    rules = book.rules
    n = len(rules)

    def per_token(getter) -> pa.Array:  # USD per million tokens → per token: exact (prices have 6 decimals)
        return pa.array([None if r.sell is None or getter(r.sell) is None else getter(r.sell) / MILLION
                         for r in rules], MONEY)

    if n:
        store.insert_arrow("pricebook_rules", pa.table({
            "version": pa.array([book.version] * n, pa.string()),
            "position": pa.array(range(1, n + 1), pa.uint32()),
            "rule_id": pa.array([r.id for r in rules], pa.string()),
            "customer": pa.array([r.customer or "" for r in rules], pa.string()),
            "plan": pa.array([r.plan or "" for r in rules], pa.string()),
            "provider_regex": pa.array([glob_regex(r.provider) for r in rules], pa.string()),
            "model_regex": pa.array([glob_regex(r.model) for r in rules], pa.string()),
            "effective_from": pa.array([r.effective_from for r in rules], TS),
            "effective_to": pa.array([r.effective_to for r in rules], TS),
            "markup": pa.array([None if r.markup_percent is None else 1 + r.markup_percent / 100 for r in rules],
                               _MARKUP),
            "input_per_token": per_token(lambda s: s.input),
            "cached_input_per_token": per_token(lambda s: s.cached_input),
            "output_per_token": per_token(lambda s: s.output),
            "per_request": pa.array([None if r.sell is None else r.sell.per_request for r in rules], MONEY),
        }))
    customers = sorted(book.customers.items())
    if customers:
        store.insert_arrow("pricebook_customers", pa.table({
            "version": pa.array([book.version] * len(customers), pa.string()),
            "customer": pa.array([name for name, _ in customers], pa.string()),
            "plan": pa.array([c.plan or "" for _, c in customers], pa.string()),
            "stripe_customer_id": pa.array([c.stripe_customer_id or "" for _, c in customers], pa.string()),
        }))
    # last: a book becomes current only once its rules and customers are stored
    store.insert_arrow("pricebook_loads", pa.table({
        "version": pa.array([book.version], pa.string()), "path": pa.array([book.path or ""], pa.string()),
        "rules": pa.array([n], pa.uint32()), "customers": pa.array([len(customers)], pa.uint32()),
        "stripe_meters": pa.array([orjson.dumps([m.model_dump() for m in book.stripe.meters] if book.stripe else [])
                                   .decode()], pa.string()),
        "loaded_at": pa.array([loaded_at], TS),
    }))


def current_book(querier: TextQuerier) -> tuple[str, list[Meter]] | None:
    """The version and Stripe meters of the price book loaded last, or None when none was loaded."""
    rows = query_result(querier, "SELECT argMax(version, loaded_at), argMax(stripe_meters, loaded_at), count() "
                                 "FROM pricebook_loads FINAL").rows
    if not rows or not rows[0][2]:
        return None
    version, meters, _ = rows[0]
    return version, [Meter(**m) for m in orjson.loads(meters)]
