"""The emitter: a tiny, non-blocking client that services embed.

    from spendstream.emitter import Emitter, from_openai_usage

    emitter = Emitter(bootstrap_servers="kafka:9092")
    emitter.emit(from_openai_usage(response.usage, model=response.model, team="search"))
"""

from spendstream.emitter.adapters import (
    from_anthropic_message,
    from_anthropic_usage,
    from_bedrock_converse_response,
    from_bedrock_converse_usage,
    from_gemini_response,
    from_gemini_usage,
    from_openai_response,
    from_openai_usage,
    from_otel_genai_attributes,
)
from spendstream.emitter.client import DROP_REASONS, Emitter
from spendstream.emitter.estimate import estimate_usage
from spendstream.emitter.instrument import instrument, instrumentation_of
from spendstream.emitter.prefix import prefix_fields

__all__ = ["DROP_REASONS", "Emitter", "estimate_usage", "from_anthropic_message", "from_anthropic_usage",
           "from_bedrock_converse_response", "from_bedrock_converse_usage", "from_gemini_response",
           "from_gemini_usage", "from_openai_response", "from_openai_usage", "from_otel_genai_attributes",
           "instrument", "instrumentation_of",
           "prefix_fields"]
