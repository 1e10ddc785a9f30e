from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from typing import Any

import pytest

from brownout import Fallback
from brownout.errors import (
    BulkheadFull,
    CircuitOpen,
    DeadlineExceeded,
    InvalidConfig,
    RateLimited,
)
from brownout.events import Event, FallbackUsed
from brownout.testing import MockClock


@dataclass
class Response:
    status_code: int


def fail(exc: BaseException) -> Any:
    def fn(*_args: object, **_kwargs: object) -> Any:
        raise exc

    return fn


def afail(exc: BaseException) -> Any:
    async def fn(*_args: object, **_kwargs: object) -> Any:
        await asyncio.sleep(0)
        raise exc

    return fn


async def returns(value: object) -> object:
    await asyncio.sleep(0)
    return value


class Recorder:
    """A handler that records what it was given and returns ``value``."""

    def __init__(self, value: object = "fallback") -> None:
        self.value = value
        self.calls: list[tuple[object, tuple[object, ...], dict[str, object]]] = []

    def __call__(self, outcome: object, *args: object, **kwargs: object) -> object:
        self.calls.append((outcome, args, kwargs))
        return self.value


# -- the two forms ---------------------------------------------------------------------------


def test_value_form_replaces_a_failure_with_the_constant() -> None:
    assert Fallback.value("cached page").call(fail(ConnectionError("down"))) == "cached page"


def test_value_form_takes_the_other_options() -> None:
    fallback = Fallback.value(0, fallback_on=KeyError, name="zero")
    assert fallback.name == "zero"
    assert fallback.call(fail(KeyError("k"))) == 0
    with pytest.raises(ValueError):
        fallback.call(fail(ValueError("v")))


def test_a_success_is_returned_untouched_and_the_handler_not_called() -> None:
    handler = Recorder()
    sentinel = object()
    assert Fallback(handler).call(lambda: sentinel) is sentinel
    assert asyncio.run(Fallback(handler).acall(returns, sentinel)) is sentinel
    assert handler.calls == []


def test_the_handler_receives_the_exception_and_the_call_arguments() -> None:
    handler = Recorder("replaced")
    error = ConnectionError("down")
    result = Fallback(handler).call(fail(error), 1, "two", key="value")
    assert result == "replaced"
    assert handler.calls == [(error, (1, "two"), {"key": "value"})]


def test_the_async_handler_is_awaited_in_async_calls() -> None:
    seen: list[tuple[object, tuple[object, ...]]] = []

    async def handler(outcome: object, *args: object) -> str:
        await asyncio.sleep(0)
        seen.append((outcome, args))
        return "from async handler"

    error = TimeoutError("slow")
    result = asyncio.run(Fallback(handler).acall(afail(error), 7))
    assert result == "from async handler"
    assert seen == [(error, (7,))]


def test_a_plain_handler_works_in_async_calls() -> None:
    handler = Recorder("plain")
    assert asyncio.run(Fallback(handler).acall(afail(OSError("x")), a=1)) == "plain"
    assert handler.calls[0][2] == {"a": 1}


def test_an_async_handler_in_a_sync_call_raises_type_error_without_leaking() -> None:
    async def handler(outcome: object) -> str:
        return "never"

    # filterwarnings=error: an unawaited coroutine would turn into a failure here or later.
    with pytest.raises(TypeError, match="coroutine in a sync call"):
        Fallback(handler).call(fail(OSError("x")))


def test_an_error_in_the_handler_propagates_with_the_original_as_context() -> None:
    def handler(outcome: object) -> str:
        raise RuntimeError("handler broke")

    with pytest.raises(RuntimeError, match="handler broke") as info:
        Fallback(handler).call(fail(ConnectionError("down")))
    assert isinstance(info.value.__context__, ConnectionError)


# -- selection -------------------------------------------------------------------------------


def test_selection_by_exception_type() -> None:
    fallback = Fallback.value("fb", fallback_on=(ConnectionError, TimeoutError))
    assert fallback.call(fail(ConnectionRefusedError())) == "fb"  # a subclass
    assert fallback.call(fail(TimeoutError())) == "fb"
    with pytest.raises(KeyError):
        fallback.call(fail(KeyError("k")))


def test_an_exception_not_selected_propagates_as_is() -> None:
    error = ValueError("bad input")
    fallback = Fallback.value("fb", fallback_on=ConnectionError)
    with pytest.raises(ValueError) as sync_info:
        fallback.call(fail(error))
    assert sync_info.value is error
    with pytest.raises(ValueError) as async_info:
        asyncio.run(fallback.acall(afail(error)))
    assert async_info.value is error


def test_selection_by_exception_predicate() -> None:
    fallback = Fallback.value("fb", fallback_if=lambda e: getattr(e, "errno", None) == 111)
    assert fallback.call(fail(OSError(111, "refused"))) == "fb"
    with pytest.raises(OSError):
        fallback.call(fail(OSError(2, "missing")))


def test_selection_by_http_status_passes_the_response_to_the_handler() -> None:
    handler = Recorder("stale")
    fallback = Fallback(handler, fallback_statuses=[502, 503])
    replaced: object = fallback.call(lambda: Response(503))
    assert replaced == "stale"
    assert handler.calls == [(Response(503), (), {})]
    assert fallback.call(lambda: Response(200)) == Response(200)
    assert asyncio.run(fallback.acall(returns, Response(502))) == "stale"


def test_selection_by_result_predicate() -> None:
    fallback = Fallback.value([], fallback_if_result=lambda r: r is None)
    assert fallback.call(lambda: None) == []
    assert fallback.call(lambda: [1]) == [1]
    assert asyncio.run(fallback.acall(returns, None)) == []


def test_result_selection_awaits_an_async_handler() -> None:
    async def handler(outcome: object, *args: object) -> str:
        await asyncio.sleep(0)
        return f"replaced {outcome!r} (args {args!r})"

    fallback = Fallback(handler, fallback_if_result=lambda r: r == "bad")
    assert asyncio.run(fallback.acall(returns, "bad")) == "replaced 'bad' (args ('bad',))"


@pytest.mark.parametrize(
    "rejection",
    [
        CircuitOpen(policy="breaker", until=5.0, state="open"),
        BulkheadFull(policy="pool", max_concurrent=2, max_queue=0, waited_s=0.0),
        RateLimited(policy="limit", retry_after_s=1.0),
        DeadlineExceeded("too slow"),
    ],
)
def test_brownout_rejections_and_timeouts_are_replaced_by_default(rejection: Exception) -> None:
    assert Fallback.value("degraded").call(fail(rejection)) == "degraded"
    assert asyncio.run(Fallback.value("degraded").acall(afail(rejection))) == "degraded"


# -- cancellation and other BaseExceptions ---------------------------------------------------


def test_cancellation_of_the_call_is_never_replaced() -> None:
    handler = Recorder()
    fallback = Fallback(handler, fallback_on=BaseException)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(fallback.acall(afail(asyncio.CancelledError())))
    assert handler.calls == []


def test_cancelling_the_caller_is_not_replaced() -> None:
    async def main() -> None:
        handler = Recorder()
        forever = asyncio.Event()

        async def hang() -> None:
            await forever.wait()

        task = asyncio.create_task(Fallback(handler, fallback_on=BaseException).acall(hang))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert handler.calls == []

    asyncio.run(main())


def test_keyboard_interrupt_is_never_replaced() -> None:
    handler = Recorder()
    with pytest.raises(KeyboardInterrupt):
        Fallback(handler, fallback_on=BaseException).call(fail(KeyboardInterrupt()))
    assert handler.calls == []


# -- events ----------------------------------------------------------------------------------


def test_fallback_used_events_name_what_was_replaced() -> None:
    clock = MockClock(start=42.0)
    fallback = Fallback.value("fb", fallback_statuses={503}, name="prices", clock=clock)
    events: list[Event] = []
    fallback.events.subscribe(events.append)
    fallback.call(fail(ConnectionError("down")))
    clock.advance(1.0)
    fallback.call(lambda: Response(503))
    fallback.call(lambda: "fine")
    asyncio.run(fallback.acall(afail(TimeoutError())))
    assert events == [
        FallbackUsed(42.0, "prices", "ConnectionError"),
        FallbackUsed(43.0, "prices", "Response"),
        FallbackUsed(43.0, "prices", "TimeoutError"),
    ]


def test_no_event_is_emitted_when_the_exception_propagates() -> None:
    fallback = Fallback.value("fb", fallback_on=KeyError)
    events: list[Event] = []
    fallback.events.subscribe(events.append)
    with pytest.raises(ValueError):
        fallback.call(fail(ValueError()))
    assert events == []


# -- decorator -------------------------------------------------------------------------------


def test_as_a_decorator_on_a_plain_function() -> None:
    handler = Recorder("default price")

    @Fallback(handler)
    def price(item: str, *, currency: str) -> str:
        """Look up a price."""
        raise ConnectionError(item)

    assert price("book", currency="EUR") == "default price"
    assert price.__name__ == "price"
    assert price.__doc__ == "Look up a price."
    assert not inspect.iscoroutinefunction(price)
    outcome, args, kwargs = handler.calls[0]
    assert isinstance(outcome, ConnectionError)
    assert (args, kwargs) == (("book",), {"currency": "EUR"})


def test_as_a_decorator_on_an_async_def() -> None:
    @Fallback.value("default")
    async def lookup(key: str) -> str:
        await asyncio.sleep(0)
        if key == "missing":
            raise LookupError(key)
        return key.upper()

    assert inspect.iscoroutinefunction(lookup)
    assert asyncio.run(lookup("found")) == "FOUND"
    assert asyncio.run(lookup("missing")) == "default"


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"fallback_on": "oops"}, "fallback_on"),
        ({"fallback_on": (KeyError, 3)}, "fallback_on"),
        ({"fallback_if": 3}, "fallback_if"),
        ({"fallback_statuses": {42}}, "fallback_statuses"),
        ({"fallback_statuses": 503}, "fallback_statuses"),
        ({"fallback_if_result": "yes"}, "fallback_if_result"),
    ],
)
def test_invalid_config_names_the_argument(options: dict[str, Any], argument: str) -> None:
    with pytest.raises(InvalidConfig, match=rf"Fallback: {argument}=") as info:
        Fallback.value(None, **options)
    assert info.value.name == argument
    assert isinstance(info.value, ValueError)


def test_a_handler_that_is_not_callable_is_refused() -> None:
    with pytest.raises(InvalidConfig, match=r"Fallback: handler='text' .* must be a callable"):
        Fallback("text")  # type: ignore[arg-type]


def test_statuses_are_normalised_to_a_frozenset() -> None:
    assert Fallback.value(None, fallback_statuses=[503, 503, 502]).fallback_statuses == frozenset(
        {502, 503}
    )


def test_repr_shows_the_config_and_the_constant() -> None:
    text = repr(Fallback.value("n/a", fallback_on=KeyError, clock=MockClock()))
    assert text.startswith("Fallback(handler=constant('n/a'), fallback_on=<class 'KeyError'>")
    assert "clock" not in text
