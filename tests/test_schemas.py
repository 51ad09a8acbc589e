"""Contracts: validation rules and the published JSON Schema files."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, Literal

import pytest
from pydantic import Field, ValidationError, create_model

from spendstream.batches import contract_columns
from spendstream.schemas import UsageEvent
from spendstream.schemas.jsonschema_files import PUBLISHED, SCHEMA_DIR, render
from spendstream.schemas.shape import UnsupportedField, field_shapes


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_json_schema_matches_model(name: str) -> None:
    on_disk = (SCHEMA_DIR / name).read_text(encoding="utf-8")
    assert on_disk == render(PUBLISHED[name]), (
        f"{name} drifted from its model: run `python -m spendstream.schemas` and commit the result"
    )


def test_wire_schema_requires_the_idempotency_key_and_time() -> None:
    for name in ("usage_event.v1.json", "usage_event.v2.json"):
        schema = json.loads((SCHEMA_DIR / name).read_text())
        assert {"event_id", "ts", "provider", "model"} <= set(schema["required"])


def test_unknown_fields_are_kept() -> None:
    event = UsageEvent.model_validate({"event_id": "e1", "ts": "2026-01-01T00:00:00Z", "provider": "openai",
                                       "model": "gpt-4o", "zone_hint": "eu-west-1"})
    assert event.extra_fields == {"zone_hint": "eu-west-1"}


def test_a_version_1_event_stays_valid_and_its_published_schema_stays_as_it_was() -> None:
    """v1 senders keep validating against usage_event.v1.json; the model reads their events as version 1."""
    import jsonschema

    sent = {"schema_version": 1, "event_id": "e1", "ts": "2026-01-01T00:00:00Z", "provider": "anthropic",
            "model": "claude-sonnet-4-5", "input_tokens": 10, "output_tokens": 2}
    jsonschema.Draft202012Validator(json.loads((SCHEMA_DIR / "usage_event.v1.json").read_text())).validate(sent)
    event = UsageEvent.model_validate(sent)
    assert (event.schema_version, event.web_search_calls, event.region) == (1, 0, None)
    v2 = json.loads((SCHEMA_DIR / "usage_event.v2.json").read_text())
    assert v2["properties"]["schema_version"]["enum"] == [1, 2] and "web_search_calls" in v2["properties"]
    with pytest.raises(ValidationError, match="schema_version"):
        UsageEvent.model_validate(sent | {"schema_version": 3})


@pytest.mark.parametrize("field", ["web_search_calls", "web_fetch_calls", "file_search_calls",
                                   "code_execution_calls"])
def test_tool_call_counts_are_strict_bounded_integers(field: str) -> None:
    for bad in (-1, 100_001, "3", 1.5):
        with pytest.raises(ValidationError, match=field):
            UsageEvent.model_validate({"provider": "anthropic", "model": "claude", field: bad})


@pytest.mark.parametrize("field, value", [("input_tokens", "12"), ("output_tokens", 1.5), ("input_tokens", True),
                                          ("input_tokens", -1)])
def test_token_counts_are_strict_non_negative_integers(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        UsageEvent.model_validate({"provider": "openai", "model": "gpt-4o", field: value})
    assert field in str(info.value)


def test_absurdly_large_token_counts_are_rejected() -> None:
    with pytest.raises(ValidationError, match="less than or equal to 100000000"):
        UsageEvent(provider="openai", model="gpt-4o", output_tokens=10**12)


def test_one_hour_cache_writes_must_be_part_of_cache_writes() -> None:
    with pytest.raises(ValidationError, match="must include the 1-hour writes"):
        UsageEvent(provider="anthropic", model="claude", input_tokens=10, cache_write_tokens=2,
                   cache_write_1h_tokens=3)


def test_cached_tokens_must_be_part_of_input_tokens() -> None:
    with pytest.raises(ValidationError, match="must include cached"):
        UsageEvent(provider="anthropic", model="claude", input_tokens=10, cached_input_tokens=20)


def test_reasoning_tokens_must_be_part_of_output_tokens() -> None:
    with pytest.raises(ValidationError, match="must include reasoning"):
        UsageEvent(provider="openai", model="o3", output_tokens=5, reasoning_tokens=6)


def test_tags_are_bounded() -> None:
    with pytest.raises(ValidationError):
        UsageEvent(provider="openai", model="gpt-4o", tags={f"k{i}": "v" for i in range(33)})
    with pytest.raises(ValidationError, match="longer than"):
        UsageEvent(provider="openai", model="gpt-4o", tags={"k": "v" * 300})


def test_naive_timestamps_are_rejected() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        UsageEvent.model_validate({"provider": "openai", "model": "gpt-4o", "ts": "2026-01-01T00:00:00"})


@pytest.mark.parametrize(("annotation", "refusal"), [
    (list[str], r"Odd\.odd: type list\[str\] is not described"),
    (int | str, r"Odd\.odd: a union other than `X \| None`"),
    (Annotated[float, Field(allow_inf_nan=False)], r"Odd\.odd: constraint .*allow_inf_nan.* is not described"),
    (Literal["a", 1], r"Odd\.odd: a Literal must list values of one scalar type"),
])
def test_a_field_no_decoder_or_column_can_follow_is_refused_naming_it(annotation: object, refusal: str) -> None:
    """Better no import at all than a decoder or a column that silently disagrees with the contract."""
    with pytest.raises(UnsupportedField, match=refusal):
        field_shapes(create_model("Odd", odd=(annotation, ...)))


def test_a_pattern_is_described_so_the_block_decoder_enforces_it_as_pydantic_does() -> None:
    [shape] = field_shapes(create_model("Odd", odd=(Annotated[str, Field(pattern="^[0-9]+$")], ...)))
    assert shape.constraints == {"pattern": "^[0-9]+$"}


@pytest.mark.parametrize("amount", ["0.000123", "12", "0.000000000000000001", "99999999999999999999.5"])
def test_provider_cost_is_exact_decimal_text(amount: str) -> None:
    event = UsageEvent(provider="openrouter", model="m", provider_cost_usd=amount)
    assert Decimal(event.provider_cost_usd) == Decimal(amount)


@pytest.mark.parametrize("amount", [0.000123, "1e-5", "-0.5", ".5", "0.0000000000000000001", "1,5", " 1", "٣"])
def test_provider_cost_that_a_money_column_cannot_hold_exactly_is_refused(amount: object) -> None:
    """A float, an exponent, a sign, more than 18 decimals, or digits of other scripts: refused, not rounded."""
    with pytest.raises(ValidationError, match="provider_cost_usd"):
        UsageEvent(provider="openrouter", model="m", provider_cost_usd=amount)


def test_a_column_mapping_naming_no_field_is_refused() -> None:
    with pytest.raises(ValueError, match="UsageEvent has no field 'zone'"):
        contract_columns(UsageEvent, stored_elsewhere={"zone": "gone"})


@pytest.mark.parametrize(("amount", "text"), [(1e-05, "0.00001"), (0.000123, "0.000123"), (Decimal("2.50"), "2.5"),
                                               (3, "3"), ("0.10", "0.1"), (0.1 + 0.2, "0.30000000000000004")])
def test_decimal_text_keeps_the_digits_a_provider_wrote(amount: object, text: str) -> None:
    from spendstream.schemas._types import decimal_text

    assert decimal_text(amount) == text
    assert UsageEvent(provider="p", model="m", provider_cost_usd=decimal_text(amount)).provider_cost_usd == text


@pytest.mark.parametrize("amount", [-0.01, float("nan"), float("inf"), "1e-19", "abc"])
def test_decimal_text_refuses_what_cannot_be_held_exactly(amount: object) -> None:
    from spendstream.schemas._types import decimal_text

    with pytest.raises(ValueError, match="not a"):
        decimal_text(amount)
