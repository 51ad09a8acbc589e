"""The two hooks :func:`spendstream.emitter.instrument.instrument` puts into an SDK client, and the stream observer.

``wrap_request`` wraps the client's ``request`` method (every endpoint goes through
it, around the SDK's own retry loop); ``wrap_send`` wraps ``send`` of the client's
httpx client, which the retry loop calls once per HTTP attempt. They meet through a
contextvar holding the call in progress: a thread's in sync code, a task's in async
code, so concurrent calls never see each other's attempts.
"""

from __future__ import annotations

import contextvars
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spendstream.emitter.call import Call
    from spendstream.emitter.instrument import Instrumentation
    from spendstream.emitter.responses import StreamTally

_CALL: contextvars.ContextVar[Call | None] = contextvars.ContextVar("spendstream_call", default=None)


def observe_stream(inst: Instrumentation, call: Call, tally: StreamTally, stream: Any) -> None:
    """Make ``stream`` (an SDK Stream or AsyncStream) report its usage when it ends, or when it is closed.

    Both SDKs' streams iterate ``stream._iterator``: replacing it keeps the object as
    it is (its type, its helpers). ``close()`` is wrapped too, so a stream the caller
    stops early is reported at once, not when the garbage collector finds it.
    """
    inner, original_close = stream._iterator, stream.close
    if hasattr(inner, "__anext__"):
        observer = observe_async(inst, call, tally, inner)

        async def close() -> None:
            try:
                await original_close()
            finally:
                try:
                    await observer.aclose()  # runs the observer's finally, if it started
                except (RuntimeError, ValueError):
                    pass  # being iterated right now: it reports when that ends
                inst.finish_stream(call, tally, None)  # a no-op if the observer reported already
    else:
        observer = observe_sync(inst, call, tally, inner)

        def close() -> None:
            try:
                original_close()
            finally:
                try:
                    observer.close()
                except (RuntimeError, ValueError):
                    pass
                inst.finish_stream(call, tally, None)

    stream._iterator, stream.close = observer, close


def observe_sync(inst: Instrumentation, call: Call, tally: StreamTally, inner: Any) -> Any:
    """Yield what ``inner`` yields, folding it into ``tally``; report to ``inst`` when the stream ends."""
    error = None
    try:
        for item in inner:
            _add(inst, tally, item)
            yield item
    except Exception as exc:
        error = exc
        raise
    finally:  # exhausted, failed, or closed early (then the usage seen so far is what there is)
        inst.finish_stream(call, tally, error)


async def observe_async(inst: Instrumentation, call: Call, tally: StreamTally, inner: Any) -> Any:
    """The async twin of :func:`observe_sync`."""
    error = None
    try:
        async for item in inner:
            _add(inst, tally, item)
            yield item
    except Exception as exc:
        error = exc
        raise
    finally:
        inst.finish_stream(call, tally, error)


def _add(inst: Instrumentation, tally: StreamTally, item: Any) -> None:
    try:
        tally.add(item)
    except Exception as exc:
        inst.failed_ourselves(exc)


def wrap_request(client: Any) -> None:
    """Open a call around every metered request of ``client``; close it when the SDK returns or raises."""
    original = client.request
    if getattr(original, "_spendstream_wrapped", False):
        return  # instrumented before: the wrapper reads the client's current settings

    if inspect.iscoroutinefunction(original):
        async def request(cast_to: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
            inst: Instrumentation = client._spendstream
            call, options = inst.begin(options, kwargs.get("stream", False))
            if call is None:
                return await original(cast_to, options, *args, **kwargs)
            token = _CALL.set(call)
            try:
                result = await original(cast_to, options, *args, **kwargs)
            except BaseException as exc:
                inst.failed(call, exc)
                raise
            finally:
                _CALL.reset(token)
            return inst.succeeded(call, result)
    else:
        def request(cast_to: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
            inst: Instrumentation = client._spendstream
            call, options = inst.begin(options, kwargs.get("stream", False))
            if call is None:
                return original(cast_to, options, *args, **kwargs)
            token = _CALL.set(call)
            try:
                result = original(cast_to, options, *args, **kwargs)
            except BaseException as exc:
                inst.failed(call, exc)
                raise
            finally:
                _CALL.reset(token)
            return inst.succeeded(call, result)

    request._spendstream_wrapped = True  # type: ignore[attr-defined]
    client.request = request


def wrap_send(http_client: Any) -> None:
    """Record each HTTP attempt of the call in progress (a contextvar: the thread's, or the task's)."""
    original = http_client.send
    if getattr(original, "_spendstream_wrapped", False):
        return

    if inspect.iscoroutinefunction(original):
        async def send(request: Any, *args: Any, **kwargs: Any) -> Any:
            call = _CALL.get()
            if call is None:  # a request we do not meter, or another user of a shared HTTP client
                return await original(request, *args, **kwargs)
            attempt = call.attempt_started()
            try:
                response = await original(request, *args, **kwargs)
            except BaseException as exc:
                attempt.failed(exc)
                raise
            attempt.answered(getattr(response, "status_code", None))
            return response
    else:
        def send(request: Any, *args: Any, **kwargs: Any) -> Any:
            call = _CALL.get()
            if call is None:
                return original(request, *args, **kwargs)
            attempt = call.attempt_started()
            try:
                response = original(request, *args, **kwargs)
            except BaseException as exc:
                attempt.failed(exc)
                raise
            attempt.answered(getattr(response, "status_code", None))
            return response

    send._spendstream_wrapped = True  # type: ignore[attr-defined]
    http_client.send = send
