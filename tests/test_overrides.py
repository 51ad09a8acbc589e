"""The overrides file: negotiated and self-hosted prices, effective dating, and errors that say where."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from spendstream.pricing import OverridesError, Pricer, UsageColumns, load_overrides
from spendstream.schemas import UsageEvent

FILE = """\
overrides:
  - id: acme-gpt4o-discount
    provider: openai
    model: "gpt-4o*"
    customer: acme
    effective_from: 2026-03-01
    effective_to: 2026-04-01
    discount_percent: 20
  - id: llama-self-hosted
    provider: self-hosted
    model: acme-llama-*
    effective_from: 2026-01-01
    prices:
      input: 0.20
      output: 0.60
  - id: llama-self-hosted-cheaper-for-search
    provider: self-hosted
    model: acme-llama-*
    team: search
    effective_from: 2026-01-01
    prices: {input: 0.10, output: 0.30}
"""


def _pricer(tmp_path: Path, text: str = FILE, name: str = "overrides.yaml") -> Pricer:
    path = tmp_path / name
    path.write_text(text)
    return Pricer(load_overrides(path))


def _event(day: str, **fields: object) -> UsageEvent:
    defaults = {"provider": "openai", "model": "gpt-4o", "input_tokens": 1_000_000, "output_tokens": 1_000_000}
    return UsageEvent(ts=datetime.fromisoformat(day).replace(tzinfo=timezone.utc), **{**defaults, **fields})


def test_negotiated_discount_applies_to_its_customer_within_its_dates(tmp_path) -> None:
    pricer = _pricer(tmp_path)
    inside = pricer.price(_event("2026-03-15", customer="acme"))
    # gpt-4o list: $2.50 + $10 for a million in and out; 20 % off
    assert (inside.total_cost, inside.list_cost) == (Decimal("10.00"), Decimal("12.50"))
    assert inside.override_id == "acme-gpt4o-discount" and inside.price_source == "override:acme-gpt4o-discount"
    assert inside.overrides_version and inside.overrides_version.startswith("sha256:")
    assert inside.input_price_per_mtok == Decimal("2.0")

    for other in (_event("2026-03-15", customer="globex"), _event("2026-04-01", customer="acme"),
                  _event("2026-02-28T23:59", customer="acme")):
        record = pricer.price(other)
        assert (record.total_cost, record.override_id) == (Decimal("12.50"), None)


def test_self_hosted_model_priced_from_explicit_rates_and_last_match_wins(tmp_path) -> None:
    pricer = _pricer(tmp_path)
    general = pricer.price(_event("2026-06-01", provider="self-hosted", model="acme-llama-3-70b-ft", team="chat"))
    assert general.priced and general.total_cost == Decimal("0.80")
    assert general.list_cost == general.total_cost  # no catalog price to compare with
    search = pricer.price(_event("2026-06-01", provider="self-hosted", model="acme-llama-3-70b-ft", team="search"))
    assert (search.total_cost, search.override_id) == (Decimal("0.40"), "llama-self-hosted-cheaper-for-search")
    before = pricer.price(_event("2025-12-31", provider="self-hosted", model="acme-llama-3-70b-ft"))
    assert before.priced is False and before.total_cost is None


def test_batch_of_mixed_customers_prices_each_by_its_own_rule(tmp_path) -> None:
    pricer = _pricer(tmp_path)
    events = [_event("2026-03-15", customer=c) for c in ("acme", "globex", "acme", None)]
    batch = pricer.price_columns(UsageColumns.from_events(events))
    assert batch.total_cost.to_pylist() == [Decimal("10"), Decimal("12.5"), Decimal("10"), Decimal("12.5")]
    assert batch.list_cost.to_pylist() == [Decimal("12.5")] * 4


def test_a_discount_on_a_model_the_catalog_cannot_price_stays_unpriced(tmp_path) -> None:
    pricer = _pricer(tmp_path, "overrides:\n  - {id: d, model: 'mystery-*', effective_from: 2026-01-01, "
                               "discount_percent: 10}\n")
    record = pricer.price(_event("2026-06-01", model="mystery-1"))
    assert record.priced is False
    assert "override 'd' is a discount" in record.unpriced_reason and "mystery-1" in record.unpriced_reason


def test_json_files_work_too(tmp_path) -> None:
    text = ('{"overrides": [{"id": "j", "provider": "openai", "model": "gpt-4o", "effective_from": "2026-01-01",'
            ' "prices": {"input": 1.5, "output": 6, "cached_input": 0.75}}]}')
    record = _pricer(tmp_path, text, "o.json").price(_event("2026-06-01", cached_input_tokens=500_000))
    assert record.total_cost == Decimal("0.75") + Decimal("0.375") + Decimal("6")


@pytest.mark.parametrize(("text", "line", "message"), [
    ("overrides:\n  - id: x\n    model: m\n    effective_from: 2026-01-01\n    discount_percent: lots\n",
     5, "overrides.0.discount_percent: Input should be a valid decimal"),
    ("overrides:\n  - id: x\n    model: m\n    effective_from: 2026-01-01\n    prices: {input: 1, output: 2}\n"
     "    discount_percent: 5\n", 2, "give exactly one of discount_percent or prices"),
    ("overrides:\n  - id: x\n    model: m\n    effective_from: 2026-01-01\n    prices:\n      input: 1\n"
     "      output: 2\n      outptu: 3\n", 8, "overrides.0.prices.outptu: Extra inputs are not permitted"),
    ("overrides:\n  - id: x\n    model: m\n    effective_from: 2026-01-01T10:00:00\n    discount_percent: 5\n",
     4, "needs a time zone"),
    ("overrides:\n  - id: x\n    model: m\n    effective_from: 2026-01-01\n    prices: {input: 0.1234567, output: 1}\n",
     5, "at most 6 decimal places"),
    ("overrides:\n  - id: x\n    model: m\n    effective_from: 2026-02-01\n    effective_to: 2026-01-01\n"
     "    discount_percent: 5\n", 2, "effective_to must be after effective_from"),
    ("overrides:\n  - {id: x, model: m, effective_from: 2026-01-01, discount_percent: 5}\n"
     "  - {id: x, model: n, effective_from: 2026-01-01, discount_percent: 5}\n", 2, "duplicate override id 'x'"),
    ("overrides:\n  - id: x\n    model: m\n   effective_from: [\n", 4, "not valid YAML/JSON"),
    ("overrides:\n  - id: x\n    effective_from: 2026-01-01\n    discount_percent: 5\n", 2,
     "overrides.0.model: Field required"),
])
def test_errors_name_the_file_the_line_and_the_field(tmp_path, text: str, line: int, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(OverridesError) as raised:
        load_overrides(path)
    assert f"{path}:{line}:" in str(raised.value)
    assert message in str(raised.value)


def test_missing_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(OverridesError, match="cannot read the overrides file"):
        load_overrides(tmp_path / "nope.yaml")


# -- as expressive as the catalog: tiers, fees, time-of-day windows, places ---------------------------

EXPRESSIVE = """\
overrides:
  - id: code-interpreter
    provider: openai
    model: "*"
    effective_from: 2026-01-01
    fees_per_call: {code_execution: 0.03}
  - id: acme
    provider: openai
    model: gpt-4o
    customer: acme
    effective_from: 2026-01-01
    discount_percent: 20
  - id: llama-tiered
    provider: self-hosted
    model: acme-llama
    effective_from: 2026-01-01
    prices:
      input: 1
      output: 2
      cached_input: 0.5
      tiers:
        - {above_input_tokens: 100000, input: 2}
        - {above_input_tokens: 500000, output: 8}
  - id: llama-night
    provider: self-hosted
    model: acme-llama
    effective_from: 2026-01-01
    hours: {start: "22:00", end: "06:00", time_zone: Asia/Shanghai}
    prices: {input: 0.5, output: 1}
  - id: eu-premium
    provider: self-hosted
    model: acme-llama
    region: "eu-*"
    effective_from: 2026-01-01
    premium_percent: 10
  - id: no-profile-premium
    provider: self-hosted
    model: acme-llama
    inference_profile: null
    region: "us-*"
    effective_from: 2026-01-01
    premium_percent: 5
"""


def test_a_tier_applies_its_rates_to_all_tokens_and_keeps_the_rates_it_leaves_out(tmp_path) -> None:
    pricer = _pricer(tmp_path, EXPRESSIVE)
    at = "2026-06-01T12:00"  # 20:00 in Shanghai: outside the night window
    below = pricer.price(_event(at, provider="self-hosted", model="acme-llama", input_tokens=100_000,
                                cached_input_tokens=50_000, output_tokens=10_000))
    assert below.total_cost == Decimal("0.05") + Decimal("0.025") + Decimal("0.02")
    middle = pricer.price(_event(at, provider="self-hosted", model="acme-llama", input_tokens=100_001,
                                 output_tokens=10_000))
    assert (middle.input_price_per_mtok, middle.output_price_per_mtok) == (Decimal(2), Decimal(2))
    assert middle.cached_input_price_per_mtok == Decimal("0.5")  # the tier leaves it out: as below
    top = pricer.price(_event(at, provider="self-hosted", model="acme-llama", input_tokens=600_000,
                              output_tokens=10_000))
    assert (top.input_price_per_mtok, top.output_price_per_mtok) == (Decimal(2), Decimal(8))
    assert top.total_cost == Decimal("1.2") + Decimal("0.08")


def test_a_time_of_day_window_in_its_zone_wraps_midnight(tmp_path) -> None:
    pricer = _pricer(tmp_path, EXPRESSIVE)
    def price(at: str):
        return pricer.price(_event(at, provider="self-hosted", model="acme-llama", input_tokens=100_000,
                                   output_tokens=0))
    # 22:00-06:00 Asia/Shanghai is 14:00-22:00 UTC
    assert [(price(t).total_cost, price(t).override_id) for t in ("2026-06-01T13:59", "2026-06-01T14:00",
                                                                 "2026-06-01T21:59", "2026-06-01T22:00")] == [
        (Decimal("0.1"), "llama-tiered"), (Decimal("0.05"), "llama-night"), (Decimal("0.05"), "llama-night"),
        (Decimal("0.1"), "llama-tiered")]


def test_fee_rules_and_price_rules_combine_and_the_row_names_both(tmp_path) -> None:
    # OpenAI's code interpreter: $0.03 per container (https://platform.openai.com/docs/pricing#built-in-tools)
    pricer = _pricer(tmp_path, EXPRESSIVE)
    record = pricer.price(_event("2026-06-01", customer="acme", code_execution_calls=2))
    assert record.override_id == "code-interpreter+acme"
    assert (record.fee_cost, record.code_execution_price_per_call) == (Decimal("0.06"), Decimal("0.03"))
    assert record.total_cost == Decimal("10.00") + Decimal("0.06")  # gpt-4o list $12.50, 20 % off
    other = pricer.price(_event("2026-06-01", customer="globex", code_execution_calls=1))
    assert (other.override_id, other.total_cost) == ("code-interpreter", Decimal("12.53"))
    assert other.list_cost == Decimal("12.50")  # the catalog lists no code execution fee


def test_a_region_premium_applies_where_the_call_was_served(tmp_path) -> None:
    pricer = _pricer(tmp_path, EXPRESSIVE)
    at = "2026-06-01T12:00"
    events = [_event(at, provider="self-hosted", model="acme-llama", input_tokens=100_000, output_tokens=0,
                     region=region, inference_profile=profile)
              for region, profile in [("eu-west-1", None), ("us-east-1", None), ("us-east-1", "us.acme-llama"),
                                      (None, None)]]
    batch = pricer.price_columns(UsageColumns.from_events(events))
    assert batch.total_cost.to_pylist() == [Decimal("0.11"), Decimal("0.105"), Decimal("0.1"), Decimal("0.1")]
    assert batch.override_id.to_pylist() == ["llama-tiered+eu-premium", "llama-tiered+no-profile-premium",
                                             "llama-tiered", "llama-tiered"]
    assert [pricer.price(e).total_cost for e in events] == batch.total_cost.to_pylist()


@pytest.mark.parametrize(("text", "line", "message"), [
    ("overrides:\n  - id: x\n    model: m\n    effective_from: 2026-01-01\n    prices:\n      input: 1\n"
     "      output: 2\n      tiers:\n        - {above_input_tokens: 500, input: 2}\n"
     "        - {above_input_tokens: 100, input: 3}\n", 9,
     "tiers must be in strictly ascending order of above_input_tokens, not [500, 100]"),
    ("overrides:\n  - id: x\n    model: m\n    effective_from: 2026-01-01\n    prices:\n      input: 1\n"
     "      output: 2\n      tiers:\n        - {above_input_tokens: 500, inptu: 2}\n", 9,
     "overrides.0.prices.tiers.0.inptu: Extra inputs are not permitted"),
    ("overrides:\n  - id: x\n    model: m\n    effective_from: 2026-01-01\n    discount_percent: 5\n"
     "    hours: {start: '25:00', end: '06:00'}\n", 6, "not a time of day HH:MM: '25:00'"),
    ("overrides:\n  - id: x\n    model: m\n    effective_from: 2026-01-01\n    discount_percent: 5\n"
     "    hours: {start: '22:00', end: '06:00', time_zone: Mars/Olympus}\n", 6, "unknown time zone 'Mars/Olympus'"),
    ("overrides:\n  - id: x\n    model: m\n    effective_from: 2026-01-01\n    fees_per_call:\n"
     "      web_search: 0.0000000000001\n", 6, "at most 12 decimal places (USD per call)"),
    ("overrides:\n  - id: x\n    model: m\n    effective_from: 2026-01-01\n    fees_per_call: {}\n", 5,
     "name at least one fee"),
    ("overrides:\n  - id: x\n    model: m\n    effective_from: 2026-01-01\n    discount_percent: 5\n"
     "    premium_percent: 10\n", 2, "a discount and a premium in one rule: write two rules"),
    ("overrides:\n  - id: x\n    model: m\n    effective_from: 2026-01-01\n", 2,
     "give exactly one of discount_percent or prices, or fees_per_call or premium_percent"),
])
def test_the_new_parts_are_validated_with_file_and_line(tmp_path, text: str, line: int, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(OverridesError) as raised:
        load_overrides(path)
    assert f"{path}:{line}:" in str(raised.value), str(raised.value)
    assert message in str(raised.value)
