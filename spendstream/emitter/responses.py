"""What a provider's response or stream says about usage, for :mod:`spendstream.emitter.instrument`.

Everything here reads SDK objects by duck type (attributes or dict keys), so neither
``openai`` nor ``anthropic`` is imported. :func:`usage_fields` is the one place that maps
a whole response to event fields; it uses the usage adapters and is meant to become a
call to the whole-response adapters (``from_openai_response``, ``from_anthropic_message``)
once they exist. :class:`StreamTally` folds stream chunks into the same final shape.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from spendstream.emitter.adapters import from_anthropic_usage, from_openai_usage

TOKEN_FIELDS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "cache_write_1h_tokens",
                "output_tokens", "reasoning_tokens")


def get(obj: Any, key: str) -> Any:
    """``obj[key]`` of a dict or ``obj.key`` of an SDK object; None when absent."""
    if obj is None:
        return None
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def plain(obj: Any) -> Any:
    """An SDK model as a plain dict (pydantic ``model_dump``); dicts and None as they are."""
    dump = getattr(obj, "model_dump", None)
    return dump() if callable(dump) else obj


def usage_fields(api: str, response: Any) -> dict[str, Any] | None:
    """Token counts, model as served and service tier actually served, from a whole response.

    ``api`` is ``"anthropic"`` or ``"openai"`` (Chat Completions, Responses, Completions,
    Embeddings). The tier is ``response.service_tier`` for OpenAI and
    ``usage.service_tier`` for Anthropic. None when the response carries no usage.
    """
    usage = get(response, "usage")
    if usage is None:
        return None
    model = get(response, "model") or "unknown"
    if api == "anthropic":
        event, tier = from_anthropic_usage(usage, model=model), get(usage, "service_tier")
    else:
        event, tier = from_openai_usage(usage, model=model), get(response, "service_tier")
    fields = {name: getattr(event, name) for name in TOKEN_FIELDS}
    if get(response, "model"):
        fields["model"] = str(get(response, "model"))
    if tier:
        fields["service_tier"] = str(tier)
    return fields


class StreamTally:
    """Folds the items of one stream into what :func:`usage_fields` reads, and the time of the first token.

    Knows OpenAI Chat Completions and Completions chunks, Responses API events and
    Anthropic Messages events. Text is kept only while no usage has arrived (it is
    what a local estimate would count) and never leaves the process.
    """

    def __init__(self, api: str) -> None:
        self.api = api
        self.first_token_at: float | None = None  # time.perf_counter() of the first generated content
        self.final: dict[str, Any] = {}  # usage, model, service_tier as a whole response would carry them
        self.finished = False  # the stream said it was complete (usage chunk, message_stop, response.completed)
        self._text: list[str] = []

    @property
    def text(self) -> str:
        return "".join(self._text)

    def add(self, item: Any) -> None:
        kind = get(item, "type")
        if self.api == "anthropic":
            self._anthropic(kind, item)
        elif isinstance(kind, str) and kind.startswith("response."):
            self._responses(kind, item)
        else:
            self._chat(item)

    def _content(self, text: Any) -> None:
        if text:
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()
            if self.final.get("usage") is None:
                self._text.append(str(text))

    def _chat(self, chunk: Any) -> None:
        for name in ("model", "service_tier"):
            if get(chunk, name):
                self.final[name] = get(chunk, name)
        for choice in get(chunk, "choices") or ():
            delta = get(choice, "delta")
            self._content(get(delta, "content") or get(choice, "text"))
            for call in get(delta, "tool_calls") or ():
                self._content(get(get(call, "function"), "arguments"))
        if get(chunk, "usage") is not None:
            self.final["usage"] = plain(get(chunk, "usage"))
            self.finished = True
            self._text.clear()

    def _responses(self, kind: str, event: Any) -> None:
        if kind.endswith(".delta"):
            self._content(get(event, "delta"))
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            response = get(event, "response")
            self.final = {name: plain(get(response, name)) for name in ("usage", "model", "service_tier")}
            self.finished = True

    def _anthropic(self, kind: Any, event: Any) -> None:
        if kind == "message_start":
            message = get(event, "message")
            self.final["model"] = get(message, "model")
            self.final["usage"] = dict(plain(get(message, "usage")) or {})
        elif kind == "content_block_delta":
            delta = get(event, "delta")
            self._content(get(delta, "text") or get(delta, "partial_json") or get(delta, "thinking"))
        elif kind == "message_delta":
            # message_delta's usage is cumulative; fields it leaves null keep message_start's values
            update = {k: v for k, v in (plain(get(event, "usage")) or {}).items() if v is not None}
            self.final["usage"] = {**(self.final.get("usage") or {}), **update}
        elif kind == "message_stop":
            self.finished = True


def text_of(response: Any) -> str:
    """The generated text of a whole response (what a local estimate counts when usage is missing)."""
    output_text = get(response, "output_text")  # Responses API (a property of the SDK object)
    if isinstance(output_text, str):
        return output_text
    parts = [get(get(choice, "message"), "content") or get(choice, "text") for choice in get(response, "choices") or ()]
    parts += [get(block, "text") for block in get(response, "content") or () if not isinstance(block, str)]
    return "".join(str(part) for part in parts if part)


def prompt_of(api: str, body: Mapping[str, Any]) -> str | list[Mapping[str, Any]]:
    """The prompt of a request body as estimate_usage takes it: text, or chat messages."""
    if api == "anthropic":
        system = body.get("system")
        messages = list(body.get("messages") or ())
        return ([{"role": "system", "content": system}] if system else []) + messages
    if "messages" in body:
        return list(body["messages"])
    prompt = body.get("input", body.get("prompt", ""))
    instructions = body.get("instructions")
    if isinstance(prompt, str):
        return f"{instructions}\n{prompt}" if instructions else prompt
    items = [item if isinstance(item, Mapping) else {"content": item} for item in prompt]
    return ([{"role": "developer", "content": instructions}] if instructions else []) + items


def system_prefix(api: str, body: Mapping[str, Any]) -> str | None:
    """The static prefix a request starts with: system/developer messages, ``instructions`` or ``system``."""
    if api == "anthropic":
        system = body.get("system")
        if isinstance(system, list):
            system = "".join(str(get(block, "text") or "") for block in system)
        return system or None
    if body.get("instructions"):
        return str(body["instructions"])
    leading = []
    for message in body.get("messages") or ():
        if get(message, "role") not in ("system", "developer"):
            break
        leading.append(str(get(message, "content")))
    return "\n".join(leading) or None


def requested_max_tokens(body: Mapping[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_output_tokens", "max_tokens"):
        if isinstance(body.get(name), int):
            return body[name]
    return None
