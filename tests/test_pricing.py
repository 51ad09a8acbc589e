"""The bundled catalog: exact, offline, and never a silent 0 for an unknown model."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from spendstream.pricing import Pricer
from spendstream.schemas import UsageEvent

TS = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _price(**fields: object):
    return Pricer().price(UsageEvent(ts=TS, **fields))


def test_cached_tokens_are_priced_at_the_cache_read_rate() -> None:
    # gpt-4o-mini: $0.15 / M input, $0.075 / M cached input, $0.60 / M output
    record = _price(provider="openai", model="gpt-4o-mini", input_tokens=1_000_000,
                    cached_input_tokens=400_000, output_tokens=100_000)
    assert record.input_cost == Decimal("0.6") * Decimal("0.15") + Decimal("0.4") * Decimal("0.075")
    assert record.output_cost == Decimal("0.06")
    assert record.total_cost == record.input_cost + record.output_cost
    assert record.input_price_per_mtok == Decimal("0.15")


def test_anthropic_cache_writes_cost_more_than_input() -> None:
    # claude-3-5-haiku: $0.80 / M input, $1.00 / M 5-minute cache write
    record = _price(provider="anthropic", model="claude-3-5-haiku-latest", input_tokens=1_000_000,
                    cache_write_tokens=1_000_000)
    assert record.total_cost == Decimal("1.00")


def test_unknown_model_is_flagged_not_priced_as_zero() -> None:
    record = _price(provider="openai", model="gpt-nonexistent-9", input_tokens=1000)
    assert record.priced is False
    assert record.total_cost is None and record.input_cost is None
    assert "gpt-nonexistent-9" in (record.unpriced_reason or "")


def test_unknown_provider_is_flagged() -> None:
    record = _price(provider="self-hosted", model="llama-3-70b", input_tokens=1000)
    assert record.priced is False and "self-hosted" in (record.unpriced_reason or "")


def test_record_names_the_catalog_version() -> None:
    import genai_prices

    record = _price(provider="openai", model="gpt-4o", input_tokens=1)
    assert (record.catalog, record.catalog_version) == ("genai-prices", genai_prices.__version__)


def test_vectorised_engine_agrees_with_the_catalogs_own_calculation_for_every_model() -> None:
    """Every model of every provider, priced in one batch by the engine and one by one by genai-prices.

    Models the catalog prices only by units a usage event does not report (audio hours,
    pages) are left out: genai-prices charges them $0, spendstream leaves them unpriced
    (tests/test_pricing_providers.py).
    """
    import random

    from genai_prices import Usage, data_snapshot

    from spendstream.pricing.catalog import _unreported_units
    from spendstream.pricing.engine import UsageColumns

    rng = random.Random(7)
    events, references = [], []
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            prices = model.get_prices(TS)
            if _unreported_units(prices):
                continue
            for _ in range(3):
                inp = rng.randint(0, 400_000)  # crosses the common 128k/200k/272k context tiers
                cached = rng.randint(0, inp)
                write = rng.randint(0, inp - cached)
                write_1h = rng.randint(0, write)
                out = rng.randint(0, 20_000)
                reasoning = rng.randint(0, out)
                usage = Usage(input_tokens=inp, cache_read_tokens=cached, cache_write_tokens=write,
                              cache_write_1h_tokens=write_1h, output_tokens=out, output_reasoning_tokens=reasoning)
                try:
                    calc = prices.calc_price(usage)
                except (ValueError, KeyError):
                    continue  # a price of units a text call never reports
                events.append(UsageEvent(ts=TS, provider=provider.id, model=model.id, input_tokens=inp,
                                         cached_input_tokens=cached, cache_write_tokens=write,
                                         cache_write_1h_tokens=write_1h, output_tokens=out,
                                         reasoning_tokens=reasoning))
                # each cost line is stored to 1e-18 USD, and the total is their sum (rates of the
                # catalog with more digits than that round line by line)
                q = Decimal("1e-18")
                references.append((calc["total_price"] - calc["output_price"]).quantize(q)
                                  + calc["output_price"].quantize(q))
    batch = Pricer().price_columns(UsageColumns.from_events(events))
    totals = batch.total_cost.to_pylist()
    mismatches = [(e.provider, e.model, got, want) for e, got, want in zip(events, totals, references, strict=True)
                  if got != want]
    assert mismatches[:10] == [] and len(mismatches) == 0
    assert len(events) > 6000


def test_tiered_prices_apply_the_tier_to_all_tokens() -> None:
    # claude-sonnet-4-5 doubles its input price above 200k input tokens
    small = _price(provider="anthropic", model="claude-sonnet-4-5", input_tokens=100_000)
    large = _price(provider="anthropic", model="claude-sonnet-4-5", input_tokens=1_000_000)
    assert small.total_cost == Decimal("0.3")
    assert large.total_cost == Decimal("6.0")
    assert (small.input_price_per_mtok, large.input_price_per_mtok) == (Decimal("3"), Decimal("6"))
