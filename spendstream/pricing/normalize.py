"""One function from what a service sends to what the catalog is keyed by.

Services name models the way their SDK or gateway does: ``azure/gpt-4o``,
``openrouter/anthropic/claude-3.5-sonnet``, a Bedrock ARN, ``us.anthropic.…``,
``models/gemini-1.5-pro``, ``GPT-4o``. :func:`normalize` strips the routing
wrappers and maps provider aliases; the catalog's own match rules then resolve
dated snapshots (``gpt-4o-2024-08-06``), ``-latest`` aliases and region prefixes.

Nothing here guesses: a name the catalog does not know stays unknown (the event is
stored unpriced), it is never mapped to a neighbouring model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Provider names services send → the catalog's provider ids.
PROVIDER_ALIASES = {
    "openai": "openai",
    "azure": "azure",
    "azure_openai": "azure",
    "azure-openai": "azure",
    "anthropic": "anthropic",
    "google": "google",
    "gemini": "google",
    "vertex": "google",
    "vertex_ai": "google",
    "google-vertex": "google",
    "bedrock": "aws",
    "aws": "aws",
    "aws-bedrock": "aws",
    "mistral": "mistral",
    "groq": "groq",
    "deepseek": "deepseek",
    "openrouter": "openrouter",
    "x-ai": "x-ai",
    "xai": "x-ai",
}

# ``arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-…`` and
# ``arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-…``
_BEDROCK_ARN = re.compile(r"^arn:aws[\w-]*:bedrock:[\w-]*:\d*:(?:foundation-model|inference-profile)/(?P<model>.+)$")
# Vertex AI resource names and the Gemini API's ``models/…`` form.
_GOOGLE_RESOURCE = re.compile(r"^(?:projects/[^/]+/locations/[^/]+/)?(?:publishers/google/)?models/(?P<model>[^/@:]+)")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model as the catalog is keyed: provider id and the model reference to match."""

    provider_id: str | None
    model: str


def normalize(provider: str, model: str) -> list[ModelRef]:
    """Catalog references to try, in order, for ``provider``/``model`` as sent.

    The name as sent comes first (Groq's own ids look like ``openai/gpt-oss-120b``);
    then the name with a gateway prefix taken as its provider (``azure/gpt-4o``).
    ``provider_id`` is None when the provider is not one the catalog prices.
    """
    provider_id = PROVIDER_ALIASES.get(provider.strip().lower())
    name = model.strip()
    if match := _BEDROCK_ARN.match(name):
        return [ModelRef("aws", match["model"].lower())]
    if match := _GOOGLE_RESOURCE.match(name):
        return [ModelRef(provider_id or "google", match["model"].lower())]
    name = name.lower()
    refs = [ModelRef(provider_id, name)]
    head, sep, rest = name.partition("/")
    if sep and head in PROVIDER_ALIASES:
        refs.append(ModelRef(PROVIDER_ALIASES[head], rest))
    return [ref for ref in refs if ref.provider_id is not None] or refs[:1]
