"""The price that applies: the catalog's list price with the matching override rules laid over it.

Rules combine in three layers, the last matching rule of each winning
(:mod:`spendstream.pricing.overrides` documents the file):

1. token prices: the catalog's, or a rule's explicit ``prices`` (tiers
   included), or a rule's ``discount_percent`` off the catalog's (fees too);
2. each fee kind: the catalog's, or the last rule naming it in ``fees_per_call``;
3. a ``premium_percent`` on everything above (a regional endpoint's surcharge).

A pure function of its inputs: the engine caches its answer per price group.
"""

from __future__ import annotations

from decimal import Decimal

from genai_prices.types import Tier, TieredPrices

from spendstream.pricing.catalog import CatalogPrice
from spendstream.pricing.fees import FEE_KINDS, NO_FEES, scaled
from spendstream.pricing.overrides import Override, TokenPrices
from spendstream.pricing.rates import KINDS, RateCard


def layered(listed: CatalogPrice, rules: list[Override], *, provider_id: str, model_id: str
            ) -> tuple[CatalogPrice, str | None]:
    """(the applied price, the ids of the rules that shaped it joined by ``+``, or None)."""
    tokens = next((r for r in reversed(rules) if r.prices is not None or r.discount_percent is not None), None)
    fee_rules = {kind: next((r for r in reversed(rules) if r.fees_per_call is not None
                             and getattr(r.fees_per_call, kind) is not None), None) for kind in FEE_KINDS}
    premium = next((r for r in reversed(rules) if r.premium_percent is not None), None)
    used = {id(r) for r in (tokens, premium, *fee_rules.values()) if r is not None}
    ids = [r.id for r in rules if id(r) in used]
    if not ids:
        return listed, None
    override_id = "+".join(ids)
    source = f"override:{override_id}"

    if tokens is not None and tokens.prices is not None:
        price = CatalogPrice(provider_id, model_id, source, card=card_of(tokens.prices),
                             fees=listed.fees if listed.priced else NO_FEES)
    elif not listed.priced:
        shaped = "is a discount" if tokens is not None else "prices no tokens"
        return CatalogPrice(listed.provider_id, listed.model_id, reason=(
            f"override {override_id!r} {shaped}, but {listed.reason}")), override_id
    elif tokens is not None:
        assert tokens.discount_percent is not None
        price = _scaled(listed, (Decimal(100) - tokens.discount_percent) / Decimal(100), source)
    else:
        price = _scaled(listed, Decimal(1), source)

    fees = tuple(getattr(rule.fees_per_call, kind) if rule is not None and rule.fees_per_call is not None
                 else fee for kind, rule, fee in zip(FEE_KINDS, fee_rules.values(), price.fees, strict=True))
    price = _with(price, fees=fees)
    if premium is not None:
        assert premium.premium_percent is not None
        price = _scaled(price, (Decimal(100) + premium.premium_percent) / Decimal(100), source)
    return price, override_id


def card_of(prices: TokenPrices) -> RateCard:
    """A rate card from an override's prices: flat, or tiered by input tokens as the catalog's."""
    rates = {kind: getattr(prices, kind) for kind in KINDS}
    base = RateCard.filled(**rates)
    if not prices.tiers:
        return base
    segments = [base.rates()]
    for tier in prices.tiers:  # a rate a tier leaves out stays as below it
        below = segments[-1]
        segments.append(tuple(getattr(tier, kind) if getattr(tier, kind) is not None else below[k]
                              for k, kind in enumerate(KINDS)))
    starts = [tier.above_input_tokens for tier in prices.tiers]
    return RateCard(*(TieredPrices(base=segments[0][k], tiers=[Tier(start=start, price=segment[k])
                                                               for start, segment in zip(starts, segments[1:],
                                                                                         strict=True)])
                      for k in range(len(KINDS))))


def _scaled(price: CatalogPrice, factor: Decimal, source: str) -> CatalogPrice:
    """``price`` times ``factor`` (tokens and fees), from ``source``."""
    percent = (Decimal(1) - factor) * 100
    card = price.card.discounted(percent) if price.card is not None and factor != 1 else price.card
    return CatalogPrice(price.provider_id, price.model_id, source, card=card, general=price.general,
                        factor=price.factor * factor, fees=scaled(price.fees, factor))


def _with(price: CatalogPrice, *, fees: tuple[Decimal, ...]) -> CatalogPrice:
    return CatalogPrice(price.provider_id, price.model_id, price.source, card=price.card, general=price.general,
                        factor=price.factor, reason=price.reason, fees=fees)
