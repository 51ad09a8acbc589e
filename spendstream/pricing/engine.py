"""Vectorised pricing: a whole batch of calls priced at once, exactly.

Calls are grouped by what decides their price — provider, model, mode, service
tier, the minute of ``ts`` (prices change by date and, for off-peak rates, by time
of day) and, when an override names them, team and customer. Each group's rate
card is looked up once (and cached across batches); the arithmetic is numpy on
integers:

- a rate is held as integer micro-dollars per million tokens, so
- tokens × rate is a cost in units of 1e-12 USD, an exact int64
  (token counts are at most 1e8 and rates at most $9,000 per million tokens here).

Costs leave as Arrow ``decimal128(38, 18)`` columns, reinterpreted from those
integers without ever passing through a float. A group whose rates have more than
six decimals per million tokens, or whose price is not made of token rates, is
priced event by event in ``Decimal`` (genai-prices' own calculation for the
latter), rounded to 1e-18 USD; both paths are exact to the storage's precision.

Non-token charges (per-call tool fees, per-request fees: :mod:`spendstream.pricing.fees`)
are their own line, ``fee_cost``, with rates held as integer 1e-12 USD per call.
``total_cost`` is input + output + fee. ``list_cost`` is what the catalog's list
price would have charged; ``total_cost`` is what applies after overrides (FOCUS'
ListCost and EffectiveCost).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spendstream.pricing.catalog import Catalog, CatalogPrice, genai_usage
from spendstream.pricing.fees import CALL_FIELDS, FEE_KINDS, quantities
from spendstream.pricing.groups import group, taken
from spendstream.pricing.layers import layered
from spendstream.pricing.overrides import OverrideSet
from spendstream.pricing.rates import KINDS
from spendstream.schemas.cost import CostRecord
from spendstream.schemas.usage import UsageEvent

MONEY = pa.decimal128(38, 18)
RATE_DIGITS = 6                # rates in micro-USD per million tokens
COST_DIGITS = RATE_DIGITS + 6  # so a token times a rate is in 1e-12 USD
MAX_RATE_UNITS = 9_000 * 10**RATE_DIGITS
# A fee per call is held in 1e-12 USD; calls are at most MAX_CALLS (1e5) per event, so up to
# $10 a call keeps every fee line, and the total, inside int64.
MAX_FEE_UNITS = 10 * 10**COST_DIGITS
TOKEN_COLUMNS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "cache_write_1h_tokens",
                 "output_tokens", "reasoning_tokens")
_QUANTUM = Decimal("1e-18")
_GROUP_CACHE_LIMIT = 200_000

UNPRICED, INTEGER, EXACT = 0, 1, 2


@dataclass(slots=True)
class UsageColumns:
    """The fields pricing reads, one entry per call. Strings may be lists or Arrow arrays."""

    provider: Sequence[str] | pa.Array
    model: Sequence[str] | pa.Array
    ts_ms: np.ndarray
    mode: Sequence[str] | pa.Array
    service_tier: Sequence[str | None] | pa.Array
    team: Sequence[str | None] | pa.Array
    customer: Sequence[str | None] | pa.Array
    input_tokens: np.ndarray
    cached_input_tokens: np.ndarray
    cache_write_tokens: np.ndarray
    cache_write_1h_tokens: np.ndarray
    output_tokens: np.ndarray
    reasoning_tokens: np.ndarray
    # since UsageEvent v2; None reads as 0 calls, every event answered, no region
    web_search_calls: np.ndarray | None = None
    web_fetch_calls: np.ndarray | None = None
    file_search_calls: np.ndarray | None = None
    code_execution_calls: np.ndarray | None = None
    status: Sequence[str] | pa.Array | None = None
    region: Sequence[str | None] | pa.Array | None = None
    inference_profile: Sequence[str | None] | pa.Array | None = None

    def __len__(self) -> int:
        return len(self.ts_ms)

    @classmethod
    def from_events(cls, events: Sequence[UsageEvent]) -> UsageColumns:
        def strings(name: str) -> list[Any]:
            return [getattr(e, name) for e in events]

        def counts(name: str) -> np.ndarray:
            return np.fromiter((getattr(e, name) for e in events), dtype=np.int64, count=len(events))

        ts_ms = np.fromiter((int(e.ts.timestamp() * 1000) for e in events), dtype=np.int64, count=len(events))
        return cls(strings("provider"), strings("model"), ts_ms, strings("mode"), strings("service_tier"),
                   strings("team"), strings("customer"), *(counts(name) for name in TOKEN_COLUMNS),
                   *(counts(name) for name in CALL_FIELDS.values()), status=strings("status"),
                   region=strings("region"), inference_profile=strings("inference_profile"))


    @classmethod
    def from_table(cls, events: pa.Table) -> UsageColumns:
        """The pricing fields of an Arrow table with the ``usage_events`` event columns (as the worker
        makes them, or as read back from the table)."""
        def strings(name: str) -> pa.Array:
            return events[name].combine_chunks().cast(pa.string())

        def counts(name: str) -> np.ndarray:
            return events[name].to_numpy().astype(np.int64, copy=False)

        ts_ms = events["ts"].cast(pa.timestamp("ms", tz="UTC")).to_numpy().astype(np.int64)
        return cls(strings("provider"), strings("model"), ts_ms, strings("mode"), strings("service_tier"),
                   strings("team"), strings("customer"), *(counts(name) for name in TOKEN_COLUMNS),
                   *(counts(name) for name in CALL_FIELDS.values()), status=strings("status"),
                   region=strings("region"), inference_profile=strings("inference_profile"))


@dataclass(frozen=True, slots=True)
class GroupPrice:
    """The price of one group of calls: the applied price, the list price, where it came from."""

    applied: CatalogPrice
    listed: CatalogPrice
    override_id: str | None = None


@dataclass(slots=True)
class PricedBatch:
    """Per-call pricing results, as Arrow columns ready for the ``usage_events`` table."""

    catalog: str
    catalog_version: str
    overrides_version: str | None
    priced: pa.Array
    unpriced_reason: pa.Array
    price_provider_id: pa.Array
    price_model_id: pa.Array
    price_source: pa.Array
    override_id: pa.Array
    unit_prices: dict[str, pa.Array]  # KINDS → USD per million tokens applied
    list_unit_prices: dict[str, pa.Array]  # KINDS → the catalog's list price of each
    input_cost: pa.Array
    output_cost: pa.Array
    total_cost: pa.Array
    list_cost: pa.Array
    fee_cost: pa.Array  # tool and request fees; part of total_cost
    fee_prices: dict[str, pa.Array]  # FEE_KINDS → USD per call applied
    list_fee_prices: dict[str, pa.Array]  # FEE_KINDS → the catalog's list fee of each

    def record(self, event: UsageEvent, i: int) -> CostRecord:
        """The CostRecord of call ``i`` (which is ``event``)."""
        def at(column: pa.Array) -> Any:
            return column[i].as_py()

        return CostRecord(
            event=event, priced=at(self.priced), unpriced_reason=at(self.unpriced_reason),
            catalog=self.catalog, catalog_version=self.catalog_version, overrides_version=self.overrides_version,
            price_source=at(self.price_source), override_id=at(self.override_id),
            price_model_id=at(self.price_model_id), price_provider_id=at(self.price_provider_id),
            priced_at_ts=event.ts,
            **{f"{kind}_price_per_mtok": at(column) for kind, column in self.unit_prices.items()},
            **{f"{kind}_price_per_call": at(column) for kind, column in self.fee_prices.items()},
            input_cost=at(self.input_cost), output_cost=at(self.output_cost), fee_cost=at(self.fee_cost),
            total_cost=at(self.total_cost), list_cost=at(self.list_cost),
        )


class Pricer:
    """Prices calls from the bundled catalog and the local overrides."""

    def __init__(self, overrides: OverrideSet | None = None, catalog: Catalog | None = None) -> None:
        self.catalog = catalog or Catalog()
        self.overrides = overrides or OverrideSet()
        self._groups: dict[tuple[Any, ...], GroupPrice] = {}
        self._prices: dict[str, CatalogPrice] = {}

    def price(self, event: UsageEvent) -> CostRecord:
        """One call's CostRecord (the same engine as batches, for a batch of one)."""
        return self.price_columns(UsageColumns.from_events([event])).record(event, 0)

    def group_price(self, provider: str, model: str, at: datetime, mode: str, service_tier: str | None,
                    team: str | None = None, customer: str | None = None, region: str | None = None,
                    inference_profile: str | None = None) -> GroupPrice:
        """The price in force at ``at`` (to the minute) for calls described by the arguments."""
        key = (provider, model, at, mode, service_tier, team, customer, region, inference_profile)
        found = self._groups.get(key)
        if found is None:
            if len(self._groups) >= _GROUP_CACHE_LIMIT:
                self._groups.clear()
                self._prices.clear()
            resolved = self._resolve(*key)
            # The same price in another minute is the same object, so a batch tabulates it once.
            found = self._groups[key] = GroupPrice(self._intern(resolved.applied), self._intern(resolved.listed),
                                                   resolved.override_id)
        return found

    def _intern(self, price: CatalogPrice) -> CatalogPrice:
        return self._prices.setdefault(repr(price), price)

    def _resolve(self, provider: str, model: str, at: datetime, mode: str, service_tier: str | None,
                 team: str | None, customer: str | None, region: str | None,
                 inference_profile: str | None) -> GroupPrice:
        listed = self.catalog.resolve(provider, model, at, mode, service_tier)
        if not self.overrides.rules:
            return GroupPrice(listed, listed)
        provider_id, ref, _, _ = self.catalog.find(provider, model)
        models = tuple({model.lower(), ref, listed.model_id or ref})
        rules = self.overrides.matching(at, provider=provider, provider_id=provider_id, models=models, team=team,
                                        customer=customer, mode=mode, service_tier=service_tier, region=region,
                                        inference_profile=inference_profile)
        applied, override_id = layered(listed, rules, provider_id=provider_id or provider.lower(),
                                       model_id=listed.model_id or ref)
        # with no catalog price to compare with, the list price is the one that applies
        return GroupPrice(applied, listed if listed.priced or not applied.priced else applied, override_id)

    def price_columns(self, cols: UsageColumns) -> PricedBatch:
        # Team and customer only split groups where an override names them: everyone
        # else shares one group per model and minute, however many customers there are.
        named_teams = {r.team for r in self.overrides.rules if r.team is not None}
        named_customers = {r.customer for r in self.overrides.rules if r.customer is not None}
        # Region and inference profile split groups only where a rule depends on them.
        place = self.overrides.names_place
        group_of, rep = group(cols, teams=named_teams, customers=named_customers, place=place)
        minute_ms = (cols.ts_ms // 60_000) * 60_000
        # each group's representative call: its fields decide the group's price
        strings = {name: taken(getattr(cols, name), rep) for name in
                   ("provider", "model", "mode", "service_tier", "team", "customer")}
        nowhere = [None] * len(rep)
        where = {name: taken(getattr(cols, name), rep) if place and getattr(cols, name) is not None else nowhere
                 for name in ("region", "inference_profile")}

        def named(value: str | None, names: set[str]) -> str | None:
            return value if value in names else None

        groups = [self.group_price(
            strings["provider"][g], strings["model"][g], datetime.fromtimestamp(minute_ms[r] / 1000, timezone.utc),
            strings["mode"][g], strings["service_tier"][g], named(strings["team"][g], named_teams),
            named(strings["customer"][g], named_customers), where["region"][g], where["inference_profile"][g])
            for g, r in enumerate(rep.tolist())]

        # Many groups share a price (the same model in another minute): tabulate each price once.
        index: dict[int, int] = {}
        prices: list[CatalogPrice] = []
        for price in (p for g in groups for p in (g.applied, g.listed)):
            if id(price) not in index:
                index[id(price)] = len(prices)
                prices.append(price)
        table = _Tables(prices)
        applied_of = np.array([index[id(g.applied)] for g in groups], dtype=np.int64)[group_of]
        listed_of = np.array([index[id(g.listed)] for g in groups], dtype=np.int64)[group_of]

        tokens = [np.asarray(getattr(cols, name), dtype=np.int64) for name in TOKEN_COLUMNS]
        calls = quantities({name: getattr(cols, name) for name in CALL_FIELDS.values()}, cols.status, len(cols),
                           wanted=table.fee_rates.any(axis=0).tolist())
        path, list_path = table.path[applied_of], table.path[listed_of]
        priced, list_priced = path != UNPRICED, list_path != UNPRICED
        rates, segment, (input_units, output_units) = table.cost_units(applied_of, tokens)
        list_rates, list_segment, (list_in, list_out) = table.cost_units(listed_of, tokens)
        fee_units, list_fee_units = table.fee_units(applied_of, calls), table.fee_units(listed_of, calls)

        unit_prices = _unit_prices(rates, applied_of, segment, priced)
        list_prices = _unit_prices(list_rates, listed_of, list_segment, list_priced)
        fee_prices = _fee_prices(prices, applied_of, priced)
        list_fee_prices = _fee_prices(prices, listed_of, list_priced)
        costs = {
            "input_cost": _money(input_units, COST_DIGITS, priced),
            "output_cost": _money(output_units, COST_DIGITS, priced),
            "fee_cost": _money(fee_units, COST_DIGITS, priced) if fee_units.any() else _zeros(priced),
            "total_cost": _money(input_units + output_units + fee_units, COST_DIGITS, priced),
            "list_cost": _money(list_in + list_out + list_fee_units, COST_DIGITS, list_priced),
        }
        exact = np.flatnonzero((path == EXACT) | (list_path == EXACT))
        if len(exact):
            unit_prices, list_prices, costs = self._exact(exact, groups, group_of, tokens, calls, unit_prices,
                                                          list_prices, costs)
        take = pa.array(group_of, pa.int32())

        def per_call(values: list[str | None]) -> pa.Array:
            return pa.array(values, pa.string()).take(take)

        return PricedBatch(
            catalog=self.catalog.name, catalog_version=self.catalog.version,
            overrides_version=self.overrides.version,
            priced=pa.array(priced, pa.bool_()),
            unpriced_reason=per_call([g.applied.reason for g in groups]),
            price_provider_id=per_call([g.applied.provider_id for g in groups]),
            price_model_id=per_call([g.applied.model_id for g in groups]),
            price_source=per_call([g.applied.source for g in groups]),
            override_id=per_call([g.override_id for g in groups]),
            unit_prices=unit_prices,
            list_unit_prices=list_prices,
            fee_prices=fee_prices,
            list_fee_prices=list_fee_prices,
            **costs,
        )

    def _exact(self, rows: np.ndarray, groups: list[GroupPrice], group_of: np.ndarray, tokens: list[np.ndarray],
               calls: list[np.ndarray], unit_prices: dict[str, pa.Array], list_prices: dict[str, pa.Array],
               costs: dict[str, pa.Array]):
        """Rewrite the rows of groups that need Decimal arithmetic, event by event."""
        unit_lists = {kind: column.to_pylist() for kind, column in unit_prices.items()}
        list_lists = {kind: column.to_pylist() for kind, column in list_prices.items()}
        cost_lists = {name: column.to_pylist() for name, column in costs.items()}
        for i in rows.tolist():
            group = groups[group_of[i]]
            counts = dict(zip(TOKEN_COLUMNS, (int(t[i]) for t in tokens), strict=True))
            used = [int(c[i]) for c in calls]
            if group.applied.priced:
                input_cost, output_cost, applied_rates = _exact_cost(group.applied, counts)
                fee_cost = _exact_fee(group.applied, used)
                cost_lists["input_cost"][i], cost_lists["output_cost"][i] = input_cost, output_cost
                cost_lists["fee_cost"][i] = fee_cost
                cost_lists["total_cost"][i] = input_cost + output_cost + fee_cost
                for kind, rate in zip(KINDS, applied_rates, strict=True):
                    unit_lists[kind][i] = rate
            if group.listed.priced:
                list_in, list_out, list_rates = _exact_cost(group.listed, counts)
                cost_lists["list_cost"][i] = list_in + list_out + _exact_fee(group.listed, used)
                for kind, rate in zip(KINDS, list_rates, strict=True):
                    list_lists[kind][i] = rate
        return ({kind: pa.array(values, MONEY) for kind, values in unit_lists.items()},
                {kind: pa.array(values, MONEY) for kind, values in list_lists.items()},
                {name: pa.array(values, MONEY) for name, values in cost_lists.items()})


class _Tables:
    """Integer rate tables per price: rates[price, segment, kind] and the tier thresholds."""

    def __init__(self, prices: list[CatalogPrice]) -> None:
        segments = [self._segments(p) for p in prices]
        width = max((len(s[1]) for s in segments if s is not None), default=1)
        self.path = np.array([UNPRICED if not p.priced else EXACT if s is None else INTEGER
                              for p, s in zip(prices, segments, strict=True)], dtype=np.int8)
        self.rates = np.zeros((len(prices), width, len(KINDS)), dtype=np.int64)
        self.thresholds = np.full((len(prices), max(width - 1, 1)), np.iinfo(np.int64).max, dtype=np.int64)
        self.fee_rates = np.zeros((len(prices), len(FEE_KINDS)), dtype=np.int64)
        for g, price in enumerate(prices):
            units = [fee.scaleb(COST_DIGITS) for fee in price.fees] if price.priced else []
            if any(u != u.to_integral_value() or u > MAX_FEE_UNITS for u in units):
                self.path[g] = EXACT  # a fee finer than 1e-12 USD, or above the int64 bound
            elif units:
                self.fee_rates[g] = [int(u) for u in units]
        for g, found in enumerate(segments):
            if found is None:
                continue
            starts, rates = found
            self.rates[g, :len(rates)] = rates
            self.thresholds[g, :len(starts)] = starts

    @staticmethod
    def _segments(price: CatalogPrice) -> tuple[list[int], list[list[int]]] | None:
        """Tier starts and integer rates per tier segment; None when the card needs Decimal arithmetic."""
        if not price.priced or price.card is None:
            return None
        starts = price.card.thresholds()
        segments = []
        for tokens in [0] + [start + 1 for start in starts]:
            units = [rate.scaleb(RATE_DIGITS) for rate in price.card.at(tokens)]
            if any(u != u.to_integral_value() or u > MAX_RATE_UNITS for u in units):
                return None
            segments.append([int(u) for u in units])
        return starts, segments

    def cost_units(self, price_of: np.ndarray, tokens: list[np.ndarray]):
        """(rates per call and kind, each call's tier, (input cost, output cost) in 1e-12 USD) for calls
        priced by ``price_of``."""
        inp, cached, write, write_1h, out, reasoning = tokens
        segment = (inp[:, None] > self.thresholds[price_of]).sum(axis=1)
        rates = self.rates[price_of, segment]
        input_units = ((inp - cached - write) * rates[:, 0] + cached * rates[:, 1]
                       + (write - write_1h) * rates[:, 2] + write_1h * rates[:, 3])
        output_units = (out - reasoning) * rates[:, 4] + reasoning * rates[:, 5]
        return rates, segment, (input_units, output_units)

    def fee_units(self, price_of: np.ndarray, calls: list[np.ndarray]) -> np.ndarray:
        """Each call's fees in 1e-12 USD (kinds no price charges skipped)."""
        units = np.zeros(len(price_of), dtype=np.int64)
        for k in np.flatnonzero(self.fee_rates.any(axis=0)).tolist():
            if calls[k].any():  # most batches make no tool calls at all
                units += calls[k] * self.fee_rates[price_of, k]
        return units


def _exact_cost(price: CatalogPrice, counts: dict[str, int]) -> tuple[Decimal, Decimal, tuple[Decimal | None, ...]]:
    if price.card is not None:
        r = price.card.at(counts["input_tokens"])
        c = counts
        input_cost = ((c["input_tokens"] - c["cached_input_tokens"] - c["cache_write_tokens"]) * r[0]
                      + c["cached_input_tokens"] * r[1]
                      + (c["cache_write_tokens"] - c["cache_write_1h_tokens"]) * r[2]
                      + c["cache_write_1h_tokens"] * r[3]) / 1_000_000
        output_cost = ((c["output_tokens"] - c["reasoning_tokens"]) * r[4] + c["reasoning_tokens"] * r[5]) / 1_000_000
        rates: tuple[Decimal | None, ...] = tuple(_q(rate) for rate in r)
    else:
        assert price.general is not None
        calc = price.general.calc_price(genai_usage(**counts))
        # A per-request fee belongs to no direction in the catalog; it is counted as input.
        input_cost = (calc["total_price"] - calc["output_price"]) * price.factor
        output_cost = calc["output_price"] * price.factor
        rates = (None,) * len(KINDS)
    return _q(input_cost), _q(output_cost), rates


def _exact_fee(price: CatalogPrice, used: list[int]) -> Decimal:
    return _q(sum((n * fee for n, fee in zip(used, price.fees, strict=True)), Decimal(0)))


def _fee_prices(prices: list[CatalogPrice], price_of: np.ndarray, valid: np.ndarray) -> dict[str, pa.Array]:
    """The per-call fee columns (USD per call of each kind): each price's fees converted once, then gathered.

    Most kinds are charged by no price of a batch: their column is 0 (NULL where unpriced), made once.
    """
    take = pa.array(price_of)
    zeros = None
    columns = {}
    for k, kind in enumerate(FEE_KINDS):
        if any(p.fees[k] for p in prices if p.priced):
            columns[kind] = pa.array([_q(p.fees[k]) if p.priced else None for p in prices], MONEY).take(take)
        else:
            columns[kind] = zeros = zeros if zeros is not None else _zeros(valid)
    return columns


def _zeros(valid: np.ndarray) -> pa.Array:
    """0 USD where ``valid``, NULL elsewhere."""
    zero = pa.repeat(pa.scalar(Decimal(0), MONEY), len(valid))
    return zero if valid.all() else pc.if_else(pa.array(valid, pa.bool_()), zero, pa.scalar(None, MONEY))


def _q(value: Decimal) -> Decimal:
    return value.quantize(_QUANTUM)


def _money(units: np.ndarray, digits: int, valid: np.ndarray) -> pa.Array:
    """Integer amounts in units of 10**-digits USD as decimal128(38, 18), exactly; invalid rows null."""
    ints = pc.cast(pa.array(units, pa.int64(), mask=~valid), pa.decimal128(38, 0))
    scaled = pa.Array.from_buffers(pa.decimal128(38, digits), len(ints), ints.buffers(), null_count=ints.null_count)
    return pc.cast(scaled, MONEY)


def _unit_prices(rates: np.ndarray, price_of: np.ndarray, segment: np.ndarray, valid: np.ndarray
                 ) -> dict[str, pa.Array]:
    """The per-call unit-price columns: each distinct (price, tier) converted to decimal once, then gathered."""
    key = price_of.astype(np.int64) * (int(segment.max(initial=0)) + 1) + segment
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    take = pa.array(inverse.astype(np.int32))
    return {kind: _money(rates[first, k], RATE_DIGITS, valid[first]).take(take) for k, kind in enumerate(KINDS)}
