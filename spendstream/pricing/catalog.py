"""The bundled price catalog (genai-prices), used offline, and the price in force for a call.

genai-prices ships its data inside the wheel; we only ever read its snapshot and
never ask it to update, so nothing is fetched at run time. The version is pinned
in pyproject.toml (see README, "Upgrading the price catalog").

:meth:`Catalog.resolve` answers one question for a group of calls that share a
model, an instant (to the minute), a mode and a service tier: which rate card
applies and where it came from. Everything per event happens in
:mod:`spendstream.pricing.engine`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache

import genai_prices
from genai_prices import Usage, data_snapshot
from genai_prices.types import ModelInfo, ModelPrice, Provider

from spendstream.pricing.fees import CATALOG_KEYS, NO_FEES, Fees, catalog_fees
from spendstream.pricing.normalize import PROVIDER_ALIASES, normalize
from spendstream.pricing.rates import REPORTED_PRICE_KEYS, RateCard

CATALOG_NAME = "genai-prices"
FEE_PRICE_KEYS = frozenset(CATALOG_KEYS.values())
CATALOG_VERSION = genai_prices.__version__

# The catalog's batch prices start 2026-10-14 and retired models have none, but
# these providers publish one discount for every model they batch: 50 % off each
# token rate. OpenAI bills its "flex" service tier at the batch rates.
BATCH_DISCOUNT_PERCENT = {"openai": Decimal(50), "azure": Decimal(50), "anthropic": Decimal(50),
                          "google": Decimal(50), "aws": Decimal(50), "mistral": Decimal(50), "groq": Decimal(50)}
FLEX_AT_BATCH_RATES = {"openai", "azure"}
# Service tiers that mean "the standard price".
STANDARD_TIERS = {None, "", "default", "auto", "standard", "on_demand", "on-demand"}


@dataclass(frozen=True, slots=True)
class CatalogPrice:
    """The price the catalog gives a group of calls, or why it gives none."""

    provider_id: str | None
    model_id: str | None
    source: str | None = None          # "catalog", "catalog:batch", "rule:batch-50%", …
    card: RateCard | None = None       # per-token rates, when the price is made of them
    general: ModelPrice | None = None  # otherwise genai-prices' own calculation, per event
    factor: Decimal = Decimal(1)       # a discount rule applied to ``general``
    reason: str | None = None          # why there is no price
    fees: Fees = NO_FEES               # USD per call of each fee kind (spendstream.pricing.fees)

    @property
    def priced(self) -> bool:
        return self.reason is None


class Catalog:
    name = CATALOG_NAME
    version = CATALOG_VERSION

    def __init__(self) -> None:
        self._snapshot = data_snapshot.get_snapshot()
        self._find = lru_cache(maxsize=65_536)(self._find_uncached)

    def find(self, provider: str, model: str) -> tuple[str | None, str, Provider | None, ModelInfo | None]:
        """(provider id, normalised model, catalog provider, catalog model); the last two None if unknown."""
        return self._find(provider, model)

    def providers_of(self, model: str) -> list[str]:
        """The ids of the priced providers a bare model name belongs to, by the catalog's own match rules.

        One id when genai-prices' provider inference claims the name and has the model
        (``claude-…`` is Anthropic's); otherwise every priced provider that has a model
        of that name (Bedrock's ``us.anthropic.claude-…-v2:0``), which may be several or
        none: a caller guesses nothing from those.
        """
        priced = list(dict.fromkeys(PROVIDER_ALIASES.values()))
        try:
            provider, _ = self._snapshot.find_provider_model(model.lower(), None, None, None)
            if provider.id in priced:
                return [provider.id]
        except LookupError:
            pass
        return sorted(p for p in priced if self.find(p, model)[3] is not None)

    def _find_uncached(self, provider: str, model: str):
        refs = normalize(provider, model)
        if refs[0].provider_id is None:
            return None, refs[0].model, None, None
        for ref in refs:
            found = self._lookup(ref.provider_id, ref.model)
            if found is not None:
                return ref.provider_id, ref.model, *found
        return refs[0].provider_id, refs[0].model, None, None

    def _lookup(self, provider_id: str, model: str) -> tuple[Provider, ModelInfo] | None:
        try:
            return self._snapshot.find_provider_model(model, None, provider_id, None)
        except LookupError:
            # The catalog's own id is a name too, even where its match rules miss it.
            return next(((p, m) for p in self._snapshot.providers if p.id == provider_id
                         for m in p.models if m.id == model), None)

    def resolve(self, provider: str, model: str, at: datetime, mode: str, service_tier: str | None) -> CatalogPrice:
        provider_id, ref, found_provider, found_model = self.find(provider, model)
        if provider_id is None:
            return CatalogPrice(None, None, reason=f"provider {provider!r} is not in the catalog "
                                                   f"(neither a provider id of {CATALOG_NAME} nor an alias of one)")
        if found_model is None or found_provider is None:
            tried = ", ".join(sorted({f"{r.provider_id}/{r.model}" for r in normalize(provider, model)}))
            return CatalogPrice(provider_id, None, reason=f"model {model!r} is not in the catalog for provider "
                                                          f"{provider_id!r} (looked up as {tried})")
        ids = (found_provider.id, found_model.id)
        if unreported := _unreported_units(found_model.get_prices(at)):
            return CatalogPrice(*ids, reason=f"{found_model.id!r} of {found_provider.id!r} is priced per "
                                             f"{', '.join(unreported)} in the catalog, which a usage event does "
                                             "not report; add an override")
        context: dict[str, str] = {}
        if mode == "batch":
            context["processing"] = "batch"
        if service_tier not in STANDARD_TIERS:
            # Anthropic's fast mode is a speed, not a tier, in the catalog
            fast = service_tier == "fast" and any(v.when == {"speed": "fast"} for v in found_model.price_variants or ())
            context["speed" if fast else "service_tier"] = str(service_tier)
        if not context:
            return _priced(*ids, "catalog", found_model.get_prices(at))
        if _variant_in_force(found_model, context, at):
            return _priced(*ids, "catalog:" + ",".join(context.values()), found_model.get_prices(at, context))
        at_batch_rates = (context == {"processing": "batch"}
                          or (context == {"service_tier": "flex"} and provider_id in FLEX_AT_BATCH_RATES))
        discount = BATCH_DISCOUNT_PERCENT.get(provider_id)
        if at_batch_rates and discount is not None:
            return _priced(*ids, f"rule:batch-{discount}%", found_model.get_prices(at), discount)
        wanted = " and ".join(f"{k}={v}" for k, v in context.items())
        return CatalogPrice(*ids, reason=f"no {wanted} price for {found_model.id!r} on {at:%Y-%m-%d} "
                                         f"in the catalog; add an override")


def _priced(provider_id: str, model_id: str, source: str, price: ModelPrice,
            discount: Decimal | None = None) -> CatalogPrice:
    # The batch discount is on tokens: tool and request fees are charged as listed.
    fees = catalog_fees(price)
    card = RateCard.of(price)
    if card is None:
        factor = (Decimal(100) - discount) / Decimal(100) if discount is not None else Decimal(1)
        # genai-prices would charge one request per call inside its total: the fee line has it
        general = ModelPrice(**{k: v for k, v in vars(price).items()
                                if not k.startswith("_") and k not in FEE_PRICE_KEYS})
        return CatalogPrice(provider_id, model_id, source, general=general, factor=factor, fees=fees)
    if discount is not None:
        card = card.discounted(discount)
    return CatalogPrice(provider_id, model_id, source, card=card, fees=fees)


def _variant_in_force(model: ModelInfo, context: dict[str, str], at: datetime) -> bool:
    return any(
        variant.when.items() <= context.items()
        and (variant.constraint is None or variant.constraint.active(at))
        and any(value is not None for value in vars(variant.prices).values())
        for variant in model.price_variants or ()
    )


def _unreported_units(price: ModelPrice) -> list[str]:
    """The units a price is made of when it charges nothing a usage event reports (else [])."""
    charged = [key for key, value in vars(price).items() if not key.startswith("_") and value is not None]
    return [] if not charged or set(charged) & REPORTED_PRICE_KEYS else sorted(charged)


def genai_usage(*, input_tokens: int, cached_input_tokens: int, cache_write_tokens: int, cache_write_1h_tokens: int,
                output_tokens: int, reasoning_tokens: int) -> Usage:
    """Token counts as genai-prices reads them (the same inclusive meanings as ours).

    Tool calls and requests are given as 0: their fees are priced as their own line
    (spendstream.pricing.fees), never inside genai-prices' total.
    """
    return Usage(input_tokens=input_tokens, cache_read_tokens=cached_input_tokens,
                 cache_write_tokens=cache_write_tokens, cache_write_1h_tokens=cache_write_1h_tokens,
                 output_tokens=output_tokens, output_reasoning_tokens=reasoning_tokens, web_searches=0,
                 storage_searches=0, code_executions=0)
