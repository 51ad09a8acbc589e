"""One function from what a service sends to what the catalog is keyed by.

Services name providers and models the way their SDK or gateway does:
``together_ai/meta-llama/…`` (LiteLLM), ``openrouter/anthropic/claude-3.5-sonnet``,
``huggingface/novita/…``, a Bedrock ARN, ``us.anthropic.…``, ``models/gemini-1.5-pro``,
``accounts/fireworks/models/…``, ``GPT-4o``; providers as ``bedrock``, ``vertex_ai``,
``aws.bedrock`` (OpenTelemetry), ``togetherai`` (Vercel AI SDK). :func:`normalize`
strips the routing wrappers and maps provider names to the catalog's ids (every
catalog id is a name of itself); the catalog's own match rules then resolve dated
snapshots (``gpt-4o-2024-08-06``), ``-latest`` aliases and region prefixes.

Nothing here guesses: a name the catalog does not know stays unknown (the event is
stored unpriced, the reason saying what was not found), it is never mapped to a
neighbouring model, and a host's call is never priced at another host's price.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from genai_prices import data_snapshot

# Every provider id of the pinned catalog.
CATALOG_PROVIDERS = frozenset(p.id for p in data_snapshot.get_snapshot().providers)

# How gateways, SDKs and conventions name the catalog's providers (lower case), beside the ids
# themselves: LiteLLM's provider prefixes, OpenTelemetry's gen_ai.provider.name values, the
# Vercel AI SDK's provider ids and common spellings.
_ALIASES = {
    "azure_openai": "azure", "azure-openai": "azure", "azure_ai": "azure", "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "gemini": "google", "vertex": "google", "vertex_ai": "google", "vertex_ai_beta": "google",
    "google-vertex": "google", "google_genai": "google", "gcp.gemini": "google", "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google", "google.generative-ai": "google", "google.vertex": "google",
    "bedrock": "aws", "bedrock_converse": "aws", "aws-bedrock": "aws", "aws.bedrock": "aws",
    "amazon-bedrock": "aws", "amazon_bedrock": "aws", "amazon": "aws",
    "mistral_ai": "mistral", "mistralai": "mistral", "codestral": "mistral",
    "xai": "x-ai", "x_ai": "x-ai", "grok": "x-ai",
    "together_ai": "together", "together-ai": "together", "togetherai": "together",
    "fireworks_ai": "fireworks", "fireworks-ai": "fireworks", "fireworksai": "fireworks",
    "cohere_chat": "cohere",
    "moonshot": "moonshotai", "moonshot_ai": "moonshotai", "kimi": "moonshotai",
    "voyage": "voyageai", "voyage_ai": "voyageai",
    "cloudflare_workers_ai": "cloudflare", "workers-ai": "cloudflare", "workers_ai": "cloudflare",
    "github_copilot": "github-copilot", "copilot": "github-copilot",
    "meta_llama": "meta", "meta-llama-api": "meta", "llama_api": "meta",
    "zhipu": "zhipuai", "bigmodel": "zhipuai", "z.ai": "zai", "z_ai": "zai",
    "ovh": "ovhcloud", "minimax_ai": "minimax", "quicksilver": "quicksilverpro",
    "deepseek_ai": "deepseek",
}
PROVIDER_ALIASES: dict[str, str] = {pid: pid for pid in CATALOG_PROVIDERS} | {
    alias: pid for alias, pid in _ALIASES.items() if pid in CATALOG_PROVIDERS}

# Gateways whose model names may carry another provider's prefix (``azure/gpt-4o`` sent as
# provider "openai" by an OpenAI-compatible gateway): only for these, and for providers the
# catalog does not know, does a prefix route the call to the provider it names.
ROUTERS = frozenset({"litellm", "openai", "openai-compatible", "openai_compatible", "gateway", "portkey",
                     "helicone", "proxy"})
# HuggingFace Inference Providers: ``huggingface/<host>/<org>/<model>`` (LiteLLM) or
# ``<org>/<model>:<host>`` (the HF router), each a provider of its own in the catalog.
_HF_HOSTS = {pid.removeprefix("huggingface_"): pid for pid in CATALOG_PROVIDERS if pid.startswith("huggingface_")}

# ``arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-…`` and
# ``arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-…``
_BEDROCK_ARN = re.compile(r"^arn:aws[\w-]*:bedrock:[\w-]*:\d*:(?:foundation-model|inference-profile)/(?P<model>.+)$")
# Vertex AI resource names and the Gemini API's ``models/…`` form.
_GOOGLE_RESOURCE = re.compile(r"^(?:projects/[^/]+/locations/[^/]+/)?(?:publishers/google/)?models/(?P<model>[^/@:]+)")
# Fireworks' own resource names.
_FIREWORKS_RESOURCE = re.compile(r"^accounts/[^/]+/models/(?P<model>.+)$")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model as the catalog is keyed: provider id and the model reference to match."""

    provider_id: str | None
    model: str


def provider_id_of(provider: str) -> str | None:
    """The catalog's id for a provider name as sent, or None when the catalog does not price it."""
    name = provider.strip().lower()
    if name in PROVIDER_ALIASES:
        return PROVIDER_ALIASES[name]
    host = name.removeprefix("huggingface").lstrip("/_-.")
    return _HF_HOSTS.get(host) if name.startswith("huggingface") and host else None


def normalize(provider: str, model: str) -> list[ModelRef]:
    """Catalog references to try, in order, for ``provider``/``model`` as sent.

    The name as sent comes first (Groq's own ids look like ``openai/gpt-oss-120b``);
    then the name without a routing prefix that names the same provider
    (``together_ai/…`` sent as provider together); then, only from a gateway or a
    provider the catalog does not know, the prefix taken as the provider
    (``azure/gpt-4o``). ``provider_id`` is None when the provider is not one the
    catalog prices.
    """
    sent_provider = provider.strip().lower()
    provider_id = provider_id_of(sent_provider)
    name = model.strip()
    if match := _BEDROCK_ARN.match(name):
        return [ModelRef("aws", match["model"].lower())]
    if match := _GOOGLE_RESOURCE.match(name):
        return [ModelRef(provider_id or "google", match["model"].lower())]
    name = name.lower()
    refs = [ModelRef(provider_id, name)]
    head, sep, rest = name.partition("/")
    if sep and head == "huggingface":
        host, sep, rest = rest.partition("/")
        head = "huggingface_" + host if sep else head
    if provider_id is None and sent_provider == "huggingface":
        base, colon, host = name.rpartition(":")
        if colon and host in _HF_HOSTS:
            refs.append(ModelRef(_HF_HOSTS[host], base))
    head_id = provider_id_of(head) if sep else None
    if head_id is not None and rest:
        if head_id == provider_id:
            refs.append(ModelRef(provider_id, rest))
        elif provider_id is None or sent_provider in ROUTERS:
            refs.append(ModelRef(head_id, rest))
    if match := _FIREWORKS_RESOURCE.match(refs[-1].model):
        refs.append(ModelRef(refs[-1].provider_id, match["model"]))
    return [ref for ref in refs if ref.provider_id is not None] or refs[:1]
