"""Per-token rates: the fast path for prices made of per-token rates, flat or tiered.

genai-prices' general calculation walks a registry of priced units for every
call (about 0.6 ms an event). Most models charge one rate per token type, some
with context tiers (crossing a tier's threshold of input tokens applies its rate
to all tokens of that type); for them the cost is four multiplications. Models
with anything else that applies to a text call take the general path, so the two
always agree (``tests/test_pricing.py`` checks this over the whole catalog).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from genai_prices.types import ModelPrice, TieredPrices

MILLION = Decimal(1_000_000)
Rate = Decimal | TieredPrices
_MODELLED = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")
# Prices this fast path does not model although they apply to a text call: a
# per-request fee, per-message or per-character input, a separate reasoning rate.
# Models with any of them take the general calculation. (Audio, image, video,
# search and document prices apply to quantities a UsageEvent never reports.)
_GENERAL_ONLY = {"requests_kcount", "input_text_messages_kcount", "input_mchars", "output_reasoning_mtok"}


@dataclass(frozen=True, slots=True)
class AppliedRates:
    """USD per million tokens of each type, as applied to one call."""

    input: Decimal
    cached_input: Decimal
    cache_write: Decimal
    output: Decimal

    def cost(self, *, input_tokens: int, cached_input_tokens: int, cache_write_tokens: int,
             output_tokens: int) -> tuple[Decimal, Decimal]:
        """(input-side cost, output-side cost) in USD, exact."""
        uncached = input_tokens - cached_input_tokens - cache_write_tokens
        input_cost = (uncached * self.input + cached_input_tokens * self.cached_input
                      + cache_write_tokens * self.cache_write) / MILLION
        return input_cost, output_tokens * self.output / MILLION


@dataclass(frozen=True, slots=True)
class TokenRates:
    """A model price's per-token rates, each flat or tiered by the call's input tokens."""

    input: Rate
    cached_input: Rate
    cache_write: Rate
    output: Rate

    @classmethod
    def of(cls, price: ModelPrice) -> TokenRates | None:
        """The token rates of ``price``, or None when it needs the general calculation."""
        fields = {k: v for k, v in vars(price).items() if not k.startswith("_") and v is not None}
        if fields.keys() & _GENERAL_ONLY:
            return None
        if not all(isinstance(fields[k], (Decimal, TieredPrices)) for k in fields.keys() & set(_MODELLED)):
            return None
        input_rate = fields.get("input_mtok", Decimal(0))
        return cls(
            input=input_rate,
            # An unpriced cache read or write is billed as ordinary input.
            cached_input=fields.get("cache_read_mtok", input_rate),
            cache_write=fields.get("cache_write_mtok", input_rate),
            output=fields.get("output_mtok", Decimal(0)),
        )

    def applied(self, input_tokens: int) -> AppliedRates:
        """The rates for a call with ``input_tokens`` input tokens (which selects the tier)."""
        return AppliedRates(*(_at(rate, input_tokens) for rate in
                              (self.input, self.cached_input, self.cache_write, self.output)))


def _at(rate: Rate, input_tokens: int) -> Decimal:
    if isinstance(rate, Decimal):
        return rate
    for tier in reversed(rate.tiers):  # tiers are sorted ascending by start
        if input_tokens > tier.start:
            return tier.price
    return rate.base
