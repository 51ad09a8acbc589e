"""Rate cards: the unit price of each token type for one model at one instant.

A catalog price (genai-prices ``ModelPrice``) becomes a :class:`RateCard` of six
rates in USD per million tokens, each flat or tiered by the call's input tokens
(crossing a tier's threshold applies its rate to *all* tokens of that type, as
the providers publish). Unset rates fall back the way genai-prices bills them: a
cache read or write without its own price is ordinary input, a 1-hour cache write
without one is a cache write, reasoning without one is output.

Prices with parts a rate card does not model and that apply to a text call
(per-character or per-message input) give no card: those models
are priced by genai-prices' own calculation, event by event.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from genai_prices.types import ModelPrice, Tier, TieredPrices

from spendstream.pricing.fees import CATALOG_KEYS

Rate = Decimal | TieredPrices
KINDS = ("input", "cached_input", "cache_write", "cache_write_1h", "output", "reasoning")
_PRICE_KEYS = {"input": "input_mtok", "cached_input": "cache_read_mtok", "cache_write": "cache_write_mtok",
               "cache_write_1h": "cache_write_1h_mtok", "output": "output_mtok", "reasoning": "output_reasoning_mtok"}
# Every catalog price key a usage event reports a quantity for: tokens, tool calls, requests.
REPORTED_PRICE_KEYS = frozenset(_PRICE_KEYS.values()) | frozenset(CATALOG_KEYS.values())
# Priced units that apply to a text call but that a rate card cannot express (tool and request
# fees are priced beside the card: spendstream.pricing.fees).
GENERAL_ONLY = {"input_text_messages_kcount", "input_mchars"}


@dataclass(frozen=True, slots=True)
class RateCard:
    """USD per million tokens of each token type; each flat or tiered by input tokens."""

    input: Rate
    cached_input: Rate
    cache_write: Rate
    cache_write_1h: Rate
    output: Rate
    reasoning: Rate

    @classmethod
    def of(cls, price: ModelPrice) -> RateCard | None:
        """The card for a catalog price, or None when it needs the general calculation."""
        fields = {k: v for k, v in vars(price).items() if not k.startswith("_") and v is not None}
        if fields.keys() & GENERAL_ONLY:
            return None
        if "input_mtok" not in fields and "output_mtok" not in fields:
            return None  # priced per image, second, search…: nothing a usage event reports
        raw = {kind: fields.get(key) for kind, key in _PRICE_KEYS.items()}
        if not all(rate is None or isinstance(rate, (Decimal, TieredPrices)) for rate in raw.values()):
            return None
        return cls.filled(**raw)

    @classmethod
    def filled(cls, *, input: Rate | None, output: Rate | None, cached_input: Rate | None = None,
               cache_write: Rate | None = None, cache_write_1h: Rate | None = None,
               reasoning: Rate | None = None) -> RateCard:
        """A card with unset rates falling back as billed (see module docstring)."""
        input_rate = input if input is not None else Decimal(0)
        output_rate = output if output is not None else Decimal(0)
        write = cache_write if cache_write is not None else input_rate
        return cls(
            input=input_rate,
            cached_input=cached_input if cached_input is not None else input_rate,
            cache_write=write,
            cache_write_1h=cache_write_1h if cache_write_1h is not None else write,
            output=output_rate,
            reasoning=reasoning if reasoning is not None else output_rate,
        )

    def rates(self) -> tuple[Rate, ...]:
        return tuple(getattr(self, kind) for kind in KINDS)

    @property
    def tiered(self) -> bool:
        return any(isinstance(rate, TieredPrices) for rate in self.rates())

    def at(self, input_tokens: int) -> tuple[Decimal, ...]:
        """The six flat rates that apply to a call with ``input_tokens`` input tokens."""
        return tuple(rate_at(rate, input_tokens) for rate in self.rates())

    def thresholds(self) -> list[int]:
        """Every tier start of every rate, ascending (where any rate may change)."""
        return sorted({tier.start for rate in self.rates() if isinstance(rate, TieredPrices) for tier in rate.tiers})

    def discounted(self, percent: Decimal) -> RateCard:
        factor = (Decimal(100) - percent) / Decimal(100)
        return replace(self, **{kind: _scale(getattr(self, kind), factor) for kind in KINDS})


def rate_at(rate: Rate, input_tokens: int) -> Decimal:
    if isinstance(rate, Decimal):
        return rate
    for tier in reversed(rate.tiers):  # tiers are sorted ascending by start
        if input_tokens > tier.start:
            return tier.price
    return rate.base


def _scale(rate: Rate, factor: Decimal) -> Rate:
    if isinstance(rate, Decimal):
        return rate * factor
    return TieredPrices(base=rate.base * factor,
                        tiers=[Tier(start=t.start, price=t.price * factor) for t in rate.tiers])
