"""A loopback HTTP server that answers like OpenAI's or Anthropic's API, from a script the test writes.

Each request takes the next scripted answer (a JSON body, or a list of server-sent
events) and is recorded with its path and JSON body, so a test can check both what
the SDK sent and what the instrumentation made of the answer.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # a JSON document; or, with sse=True, a list of (event name or None, data)
    sse: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # before answering: longer than the client's timeout makes a timeout


class ProviderServer:
    """Serves scripted answers on 127.0.0.1 (a free port) until stopped."""

    def __init__(self) -> None:
        self.answers: deque[Answer] = deque()
        self.requests: list[tuple[str, dict]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                server.requests.append((self.path, json.loads(raw) if raw else {}))
                answer = server.answers.popleft() if server.answers else Answer(500, {"error": "no answer scripted"})
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                try:
                    self._answer(answer)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout): nothing to answer

            do_GET = do_POST  # noqa: N815

            def _answer(self, answer: Answer) -> None:
                if answer.sse:
                    payload = "".join((f"event: {name}\n" if name else "") + f"data: {json.dumps(data)}\n\n"
                                      if not isinstance(data, str) else f"data: {data}\n\n"
                                      for name, data in answer.body).encode()
                    content_type = "text/event-stream"
                else:
                    payload, content_type = json.dumps(answer.body).encode(), "application/json"
                self.send_response(answer.status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(payload)))
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def script(self, *answers: Answer) -> None:
        self.answers.extend(answers)

    def start(self) -> ProviderServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def openai_chat(*, model: str = "gpt-4o-mini-2024-07-18", content: str = "Hello there.", service_tier: str = "default",
                usage: dict | None = None) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1764460800, "model": model,
            "service_tier": service_tier,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": usage or {"prompt_tokens": 1200, "completion_tokens": 80, "total_tokens": 1280,
                               "prompt_tokens_details": {"cached_tokens": 1024},
                               "completion_tokens_details": {"reasoning_tokens": 16}}}


def openai_chat_stream(*, words: list[str], include_usage: bool, model: str = "gpt-4o-mini-2024-07-18",
                       service_tier: str = "default") -> list[tuple[str | None, Any]]:
    """Chunks as OpenAI streams them: a usage chunk (no choices) last, only when the request asked for it."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1764460800, "model": model,
            "service_tier": service_tier}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    chunks += [{**base, "choices": [{"index": 0, "delta": {"content": word}}]} for word in words]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if include_usage:
        chunks.append({**base, "choices": [], "usage": {"prompt_tokens": 42, "completion_tokens": len(words),
                                                        "total_tokens": 42 + len(words)}})
    return [(None, c) for c in chunks] + [(None, "[DONE]")]


def anthropic_message(*, model: str = "claude-sonnet-4-6", service_tier: str = "standard") -> dict:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "Hello."}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 100, "cache_read_input_tokens": 2000, "cache_creation_input_tokens": 500,
                      "cache_creation": {"ephemeral_5m_input_tokens": 300, "ephemeral_1h_input_tokens": 200},
                      "output_tokens": 60, "service_tier": service_tier}}


def anthropic_stream(*, model: str = "claude-sonnet-4-6", service_tier: str = "priority") -> list:
    start = anthropic_message(model=model, service_tier=service_tier)
    start = {**start, "content": [], "stop_reason": None,
             "usage": {**start["usage"], "output_tokens": 1}}
    return [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hello"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": " there."}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": 75}}),
        ("message_stop", {"type": "message_stop"}),
    ]


def openai_response(*, model: str = "gpt-5-mini-2025-08-07", service_tier: str = "flex") -> dict:
    """A Responses API response (``/v1/responses``)."""
    return {"id": "resp_1", "object": "response", "created_at": 1764460800, "status": "completed", "model": model,
            "service_tier": service_tier, "output": [{"type": "message", "id": "msg_1", "role": "assistant",
                                                      "status": "completed", "content": [
                                                          {"type": "output_text", "text": "Hi.", "annotations": []}]}],
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "usage": {"input_tokens": 500, "input_tokens_details": {"cached_tokens": 128}, "output_tokens": 40,
                      "output_tokens_details": {"reasoning_tokens": 24}, "total_tokens": 540}}


def openai_response_stream(**kwargs: Any) -> list:
    done = openai_response(**kwargs)
    created = {**done, "status": "in_progress", "output": [], "usage": None}
    return [("response.created", {"type": "response.created", "sequence_number": 0, "response": created}),
            ("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": 1,
                                            "item_id": "msg_1", "output_index": 0, "content_index": 0,
                                            "delta": "Hi.", "logprobs": []}),
            ("response.completed", {"type": "response.completed", "sequence_number": 2, "response": done})]
