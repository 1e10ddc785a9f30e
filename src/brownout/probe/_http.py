"""HTTP client hooks: every outgoing request of a request, as an :class:`HttpCall`.

:func:`install_http` patches what is importable among httpx, aiohttp and requests and
returns the function that undoes it. While a request is current
(:func:`~brownout.probe._cost.current_cost`), each call appends one :class:`HttpCall` to
it: library, method, ``host:port``, the path template (ids collapsed to ``{id}`` by
:func:`~brownout.probe._middleware.path_template`), status or the exception type's name,
``started_s`` and ``duration_s`` (``perf_counter`` seconds), the effective timeout
``timeout_s`` and the body bytes. Without a current request the originals run directly.
Return values and exceptions are never changed.

Where each library is hooked, and what its timeout means:

- **httpx**: ``HTTPTransport.handle_request`` and ``AsyncHTTPTransport.handle_async_request``
  (every client using the default transports, however created). The response's byte
  stream is wrapped (a :class:`httpx.SyncByteStream` / :class:`httpx.AsyncByteStream`
  subclass, as the client requires) to count the bytes received and to extend
  ``duration_s`` to the end of the body when it is read. The timeout is
  ``request.extensions["timeout"]`` (connect, read, write and pool, each bounding one
  phase): ``timeout_s = connect + read + write + pool`` (unset write/pool phases count
  0), the bound of a request whose response arrives in one read (httpx bounds each read,
  not the total); ``math.inf`` when ``read`` or ``connect`` is ``None``
  (``timeout=None``). httpx's default (5 s each) is bounded.
- **aiohttp**: ``ClientSession._request`` is wrapped (not a ``TraceConfig``: trace
  configs are fixed when a session is created, so a session made before the probe was
  installed, typically at start-up, would not be seen; the price is a private method,
  present throughout aiohttp 3). ``duration_s`` runs to the response headers, and to the
  end of the body when it is read with ``read()``/``text()``/``json()`` (``ClientResponse
  .read`` is wrapped too); reading ``resp.content`` directly is not timed. The timeout is
  the call's ``timeout=`` or the session's ``ClientTimeout``: ``total`` when set and below
  300 s (aiohttp's default of 300 s counts as unbounded, as ``None`` does), else
  ``sock_connect`` (or ``connect``) + ``sock_read`` when both are set, else ``math.inf``.
- **requests**: ``HTTPAdapter.send``. ``duration_s`` runs to the headers, extended to the
  end of the body when urllib3 releases the connection after reading it (``r.content``,
  which ``Session.send`` reads unless ``stream=True``). The timeout is ``send``'s
  ``timeout``: ``None`` (requests' default) is unbounded; a number bounds connect and each
  read: ``2 * t``; ``(connect, read)``: their sum, unbounded when either is ``None``; an
  ``urllib3.Timeout``: its ``total``, else connect + read.

Bytes: sent is the request's ``Content-Length`` (0 for streamed bodies without one);
received is the body bytes read as they came off the wire (before decompression) for
httpx, the decoded body for aiohttp's ``read()``, the raw bytes for requests, and the
``Content-Length`` header until the body is read.

Call sites (``HttpCall.site``) cost a stack walk: captured only for a call at least
``site_capture_s`` slow, a call without a timeout, and the second call of a
(method, host, path template) in a request (the example an N+1 finding shows).

:func:`detect_http` finds ``n_plus_one_http`` and ``no_timeout`` in a finished request.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from time import perf_counter
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from .. import _validate as v
from ._cost import Finding, HttpCall, ProbeThresholds, RequestCost, _current, call_site
from ._middleware import path_template

__all__ = [
    "detect_http",
    "install_http",
    "timeout_of_aiohttp",
    "timeout_of_httpx",
    "timeout_of_requests",
]

Undo = Callable[[], None]
_MARK = "__brownout_probe_wrapped__"
_CALL = "_brownout_probe_call"
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
#: aiohttp's default ``ClientTimeout(total=300)``: a total this long counts as unbounded.
AIOHTTP_UNBOUNDED_S = 300.0
#: The second call of a key is looked for among this many earlier calls of the request.
_SEEN_SCAN = 64
_NUMBERS = (float, int)  # exact types (a bool is not a timeout)

_FIX_N_PLUS_ONE = (
    "Fetch them in one call (a batch endpoint), or gather the calls concurrently behind a "
    "bulkhead (brownout.Bulkhead); cache what repeats across requests."
)
_FIX_NO_TIMEOUT = (
    "Set a timeout on the call (brownout.Timeout), or propagate the request's deadline, so "
    "a slow dependency cannot hold this request, its connection and its worker forever."
)


class _State:
    """What the hooks of one :func:`install_http` share."""

    __slots__ = ("active", "site_capture_s")

    def __init__(self, site_capture_s: float) -> None:
        self.active = True
        self.site_capture_s = site_capture_s


# -- recording ------------------------------------------------------------------------------


class _Target:
    """What a call went to, as the hooks describe it before recording."""

    __slots__ = ("host", "method", "path", "sent", "timeout_s")

    def __init__(self, method: str, host: str, path: str, timeout_s: float, sent: int) -> None:
        self.method = method
        self.host = host
        self.path = path
        self.timeout_s = timeout_s
        self.sent = sent


def _host(host: str | None, port: int | None, scheme: str) -> str:
    name = host or ""
    if ":" in name:  # IPv6
        name = f"[{name}]"
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
    return f"{name}:{port}" if port is not None else name


def _record(  # noqa: PLR0917 - positional on purpose: once per call
    state: _State,
    cost: RequestCost,
    library: str,
    describe: Callable[[Any], _Target],
    subject: Any,
    started_s: float,
    status: int | None,
    error: BaseException | None,
    received: int,
    frame: FrameType,
) -> HttpCall | None:
    """Append the call, as ``describe(subject)`` tells it, to ``cost`` (``frame``: the
    hook's, for the call site). Never raises: a call that cannot be described is not
    recorded."""
    duration = perf_counter() - started_s
    try:
        target = describe(subject)
        host, method = target.host, target.method
        template = path_template(target.path) if target.path else "/"
        call = HttpCall(
            library,
            method,
            host,
            template,
            status,
            duration,
            started_s,
            target.timeout_s,
            target.sent,
            received,
            type(error).__name__ if error is not None else None,
        )
        calls = cost.http
        wanted = duration >= state.site_capture_s or target.timeout_s == math.inf
        if not wanted and 0 < len(calls) <= _SEEN_SCAN:
            # the second call of a (method, host, template): the example of an N+1
            seen = 0
            for other in calls:
                if (
                    other.path_template == template
                    and other.host == host
                    and other.method == method
                ):
                    seen += 1
                    if seen > 1:
                        break
            wanted = seen == 1
        if wanted:
            call.site = call_site(frame)
        calls.append(call)
    except Exception:  # the probe never changes what the call does
        return None
    return call


def _int(value: object) -> int:
    if value is None:
        return 0
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError, OverflowError):
        return 0


def _seconds(value: object) -> float | None:
    """``value`` as seconds, None when it is None (unbounded); raises on anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(value)
    return float(value)


# -- httpx ----------------------------------------------------------------------------------


def timeout_of_httpx(extension: object) -> float:
    """The total bound of an httpx request's ``extensions["timeout"]`` (see the module
    docstring): ``connect + read + write + pool`` seconds, ``math.inf`` when ``read`` or
    ``connect`` is unbounded or the extension is missing or malformed. Never raises."""
    if not isinstance(extension, dict):
        return math.inf
    connect_s = extension.get("connect")
    read_s = extension.get("read")
    write_s = extension.get("write")
    pool_s = extension.get("pool")
    if (  # the usual shape, all numbers: no checks per value
        type(connect_s) in _NUMBERS
        and type(read_s) in _NUMBERS
        and type(write_s) in _NUMBERS
        and type(pool_s) in _NUMBERS
    ):
        return float(connect_s + read_s + write_s + pool_s)  # type: ignore[operator]
    try:
        connect = _seconds(connect_s)
        read = _seconds(read_s)
        if connect is None or read is None:
            return math.inf
        write = _seconds(write_s) or 0.0
        pool = _seconds(pool_s) or 0.0
    except TypeError:
        return math.inf
    return connect + read + write + pool


def _patch_httpx(state: _State) -> list[Undo]:
    try:
        import httpx
    except ImportError:
        return []

    class _Counted(httpx.SyncByteStream):
        """The response body, counted; the call ends when it is read or closed."""

        __slots__ = ("_call", "_stream")

        def __init__(self, stream: httpx.SyncByteStream, call: HttpCall) -> None:
            self._stream = stream
            self._call = call

        def __iter__(self) -> Iterator[bytes]:
            call = self._call
            for chunk in self._stream:
                call.bytes_received += len(chunk)
                yield chunk
            call.duration_s = perf_counter() - call.started_s

        def close(self) -> None:
            try:
                self._stream.close()
            finally:
                self._call.duration_s = perf_counter() - self._call.started_s

    class _AsyncCounted(httpx.AsyncByteStream):
        __slots__ = ("_call", "_stream")

        def __init__(self, stream: httpx.AsyncByteStream, call: HttpCall) -> None:
            self._stream = stream
            self._call = call

        async def __aiter__(self) -> AsyncIterator[bytes]:
            call = self._call
            async for chunk in self._stream:
                call.bytes_received += len(chunk)
                yield chunk
            call.duration_s = perf_counter() - call.started_s

        async def aclose(self) -> None:
            try:
                await self._stream.aclose()
            finally:
                self._call.duration_s = perf_counter() - self._call.started_s

    def describe(request: httpx.Request) -> _Target:
        url = request.url
        length = request.headers.get_list("content-length")
        return _Target(
            request.method,
            _host(url.host, url.port, url.scheme),
            url.path,
            timeout_of_httpx(request.extensions.get("timeout")),
            _int(length[0]) if length else 0,
        )

    undos: list[Undo] = []
    sync_original = httpx.HTTPTransport.handle_request
    if not getattr(sync_original, _MARK, False):

        @functools.wraps(sync_original)
        def handle_request(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
            cost = _current.get()
            if cost is None or not state.active:
                return sync_original(self, request)
            started = perf_counter()
            try:
                response = sync_original(self, request)
            except BaseException as exc:
                _record(
                    state, cost, "httpx", describe, request, started, None, exc, 0, sys._getframe()
                )
                raise
            call = _record(
                state,
                cost,
                "httpx",
                describe,
                request,
                started,
                response.status_code,
                None,
                0,
                sys._getframe(),
            )
            if call is not None and isinstance(response.stream, httpx.SyncByteStream):
                response.stream = _Counted(response.stream, call)
            return response

        undos.append(_patch(httpx.HTTPTransport, "handle_request", handle_request))

    async_original = httpx.AsyncHTTPTransport.handle_async_request
    if not getattr(async_original, _MARK, False):

        @functools.wraps(async_original)
        def handle_async_request(
            self: httpx.AsyncHTTPTransport, request: httpx.Request
        ) -> Coroutine[Any, Any, httpx.Response]:
            # a plain function: outside a measured request the caller awaits the original
            # coroutine itself, with no frame of ours to pass through at each resumption
            cost = _current.get()
            if cost is None or not state.active:
                return async_original(self, request)
            return measured_async(self, request, cost)

        async def measured_async(
            self: httpx.AsyncHTTPTransport, request: httpx.Request, cost: RequestCost
        ) -> httpx.Response:
            started = perf_counter()
            try:
                response = await async_original(self, request)
            except BaseException as exc:
                _record(
                    state, cost, "httpx", describe, request, started, None, exc, 0, sys._getframe()
                )
                raise
            call = _record(
                state,
                cost,
                "httpx",
                describe,
                request,
                started,
                response.status_code,
                None,
                0,
                sys._getframe(),
            )
            if call is not None and isinstance(response.stream, httpx.AsyncByteStream):
                response.stream = _AsyncCounted(response.stream, call)
            return response

        undos.append(_patch(httpx.AsyncHTTPTransport, "handle_async_request", handle_async_request))
    return undos


# -- aiohttp --------------------------------------------------------------------------------


def timeout_of_aiohttp(timeout: object) -> float:
    """The total bound of an aiohttp ``ClientTimeout`` (or a number of seconds) in seconds
    (see the module docstring): ``total`` when set and below 300 s, else
    ``sock_connect`` (or ``connect``) + ``sock_read`` when both are set, else ``math.inf``.
    Never raises."""
    try:
        if timeout is None:
            return math.inf
        if isinstance(timeout, int | float) and not isinstance(timeout, bool):
            total = _seconds(timeout)
            connect = read = None
        else:
            total = _seconds(getattr(timeout, "total", None))
            connect = _seconds(getattr(timeout, "sock_connect", None))
            if connect is None:
                connect = _seconds(getattr(timeout, "connect", None))
            read = _seconds(getattr(timeout, "sock_read", None))
    except TypeError:
        return math.inf
    if total is not None and 0 < total < AIOHTTP_UNBOUNDED_S:
        return total
    if connect is not None and read is not None:
        return connect + read
    return math.inf


def _patch_aiohttp(state: _State) -> list[Undo]:
    try:
        import aiohttp
        from yarl import URL
    except ImportError:
        return []
    session_cls = aiohttp.ClientSession
    response_cls = aiohttp.ClientResponse
    sentinel = getattr(getattr(aiohttp, "helpers", None), "sentinel", None)

    def describe(
        subject: tuple[
            aiohttp.ClientSession, str, Any, dict[str, Any], aiohttp.ClientResponse | None
        ],
    ) -> _Target:
        session, method, str_or_url, kwargs, response = subject
        build = getattr(session, "_build_url", None)
        url = build(str_or_url) if build is not None else URL(str_or_url)
        if "timeout" in kwargs and kwargs["timeout"] is not sentinel:
            timeout = kwargs["timeout"]  # None there: no total
        else:
            timeout = getattr(session, "timeout", None)
        sent = 0
        if response is not None:
            sent = _int(response.request_info.headers.get("Content-Length"))
        return _Target(
            method.upper(),
            _host(url.host, url.port, url.scheme),
            url.path,
            timeout_of_aiohttp(timeout),
            sent,
        )

    undos: list[Undo] = []
    original = session_cls._request
    if not getattr(original, _MARK, False):

        @functools.wraps(original)
        async def _request(
            self: aiohttp.ClientSession, method: str, str_or_url: Any, *args: Any, **kwargs: Any
        ) -> aiohttp.ClientResponse:
            cost = _current.get()
            if cost is None or not state.active:
                return await original(self, method, str_or_url, *args, **kwargs)
            started = perf_counter()
            try:
                response = await original(self, method, str_or_url, *args, **kwargs)
            except BaseException as exc:
                _record(
                    state,
                    cost,
                    "aiohttp",
                    describe,
                    (self, method, str_or_url, kwargs, None),
                    started,
                    None,
                    exc,
                    0,
                    sys._getframe(),
                )
                raise
            call = _record(
                state,
                cost,
                "aiohttp",
                describe,
                (self, method, str_or_url, kwargs, response),
                started,
                response.status,
                None,
                response.content_length or 0,
                sys._getframe(),
            )
            if call is not None:
                with contextlib.suppress(AttributeError):  # a response class with __slots__
                    setattr(response, _CALL, call)
            return response

        undos.append(_patch(session_cls, "_request", _request))

    read_original = response_cls.read
    if not getattr(read_original, _MARK, False):

        @functools.wraps(read_original)
        async def read(self: aiohttp.ClientResponse) -> bytes:
            body = await read_original(self)
            call = getattr(self, "__dict__", {}).pop(_CALL, None)
            if isinstance(call, HttpCall):
                call.duration_s = perf_counter() - call.started_s
                call.bytes_received = len(body)
            return body

        undos.append(_patch(response_cls, "read", read))
    return undos


# -- requests -------------------------------------------------------------------------------


def timeout_of_requests(timeout: object) -> float:
    """The total bound of requests' ``timeout`` in seconds (see the module docstring).
    Never raises."""
    try:
        if isinstance(timeout, tuple):
            if len(timeout) != 2:
                return math.inf
            connect, read = _seconds(timeout[0]), _seconds(timeout[1])
            return math.inf if connect is None or read is None else connect + read
        if timeout is None or isinstance(timeout, int | float):
            single = _seconds(timeout)
            return math.inf if single is None else 2.0 * single
        total = _seconds(getattr(timeout, "total", None))  # urllib3.Timeout
        if total is not None:
            return total
        connect = _seconds(getattr(timeout, "connect_timeout", None))
        read = _seconds(getattr(timeout, "read_timeout", None))
    except (TypeError, ValueError):
        return math.inf
    return math.inf if connect is None or read is None else connect + read


def _patch_requests(state: _State) -> list[Undo]:
    try:
        from requests.adapters import HTTPAdapter
    except ImportError:
        return []
    original = HTTPAdapter.send
    if getattr(original, _MARK, False):
        return []

    def describe(subject: tuple[Any, object]) -> _Target:
        request, timeout = subject
        parts = urlsplit(str(request.url))
        try:
            port = parts.port
        except ValueError:
            port = None
        body = request.body
        if isinstance(body, bytes | str):
            sent = len(body)
        else:
            sent = _int(request.headers.get("Content-Length"))
        return _Target(
            str(request.method or "GET").upper(),
            _host(parts.hostname, port, parts.scheme),
            parts.path,
            timeout_of_requests(timeout),
            sent,
        )

    @functools.wraps(original)
    def send(self: HTTPAdapter, request: Any, *args: Any, **kwargs: Any) -> Any:
        cost = _current.get()
        if cost is None or not state.active:
            return original(self, request, *args, **kwargs)
        timeout = kwargs.get("timeout", args[1] if len(args) > 1 else None)
        started = perf_counter()
        try:
            response = original(self, request, *args, **kwargs)
        except BaseException as exc:
            _record(
                state,
                cost,
                "requests",
                describe,
                (request, timeout),
                started,
                None,
                exc,
                0,
                sys._getframe(),
            )
            raise
        call = _record(
            state,
            cost,
            "requests",
            describe,
            (request, timeout),
            started,
            response.status_code,
            None,
            _int(response.headers.get("Content-Length")),
            sys._getframe(),
        )
        if call is not None:
            _watch_release(response.raw, call)
        return response

    return [_patch(HTTPAdapter, "send", send)]


def _watch_release(raw: Any, call: HttpCall) -> None:
    """Extend ``call`` to the end of the body: urllib3 calls ``release_conn()`` once it has
    read the body. An instance attribute, removed when it runs (no class is patched)."""
    release = getattr(raw, "release_conn", None)
    tell = getattr(raw, "tell", None)
    if release is None or tell is None:
        return

    def release_conn() -> None:
        with contextlib.suppress(AttributeError):
            del raw.release_conn
        call.duration_s = perf_counter() - call.started_s
        try:
            read = tell()
        except Exception:  # a closed or unusual stream: keep the header's figure
            read = 0
        if isinstance(read, int) and read > 0:
            call.bytes_received = read
        release()

    with contextlib.suppress(AttributeError):  # a raw stream with __slots__: headers time only
        raw.release_conn = release_conn


# -- install / undo -------------------------------------------------------------------------


def _patch(cls: type[Any], name: str, wrapper: Callable[..., Any]) -> Undo:
    """Set ``cls.name = wrapper``; the undo puts back what was there (or removes the
    attribute when it was inherited), unless someone has replaced the wrapper since."""
    setattr(wrapper, _MARK, True)
    own = name in cls.__dict__
    original = cls.__dict__.get(name)
    setattr(cls, name, wrapper)

    def undo() -> None:
        if cls.__dict__.get(name) is not wrapper:
            return
        if own:
            setattr(cls, name, original)
        else:
            delattr(cls, name)

    return undo


def install_http(site_capture_s: float = ProbeThresholds().site_capture_s) -> Undo:
    """Patch httpx, aiohttp and requests where importable (see the module docstring) and
    return the function that restores the originals. Idempotent: a library already patched
    is left alone (and left patched by this call's undo). ``site_capture_s``: capture the
    call site of calls at least this slow (seconds)."""
    state = _State(v.non_negative("install_http", "site_capture_s", site_capture_s))
    undos = [*_patch_httpx(state), *_patch_aiohttp(state), *_patch_requests(state)]
    done = False

    def uninstall() -> None:
        nonlocal done
        if done:
            return
        done = True
        state.active = False  # a wrapper someone chained over stays, as a pass-through
        for undo in reversed(undos):
            undo()

    return uninstall


# -- detection ------------------------------------------------------------------------------


def detect_http(cost: RequestCost, th: ProbeThresholds) -> list[Finding]:
    """The HTTP findings of one request, one per (kind, method host path-template):

    - ``n_plus_one_http``: the same (method, host, path template) called
      ``>= http_n_plus_one_min_calls`` times taking ``>= http_n_plus_one_min_total_s`` in
      total (summed durations; ``span_ms`` is first start to last end, smaller than the
      total when the calls overlapped). Warning; error when the total reaches
      ``5 * http_n_plus_one_min_total_s``.
    - ``no_timeout``: calls whose effective timeout is unbounded (``timeout_s`` infinite).
      Warning.

    The key is ``"METHOD host/path/{id}"``; evidence has the counts, times in ms, the
    library and an example call site."""
    calls = cost.http
    if not calls:
        return []
    if len(calls) < th.http_n_plus_one_min_calls:  # no N+1 possible: only unbounded calls
        for call in calls:
            if call.timeout_s == math.inf:
                break
        else:
            return []
    groups: dict[tuple[str, str, str], list[HttpCall]] = {}
    for call in calls:
        groups.setdefault((call.method, call.host, call.path_template), []).append(call)
    found: list[Finding] = []
    endpoint = cost.endpoint
    for (method, host, template), group in groups.items():
        key = f"{method} {host}{template}"
        site = next((c.site for c in group if c.site), None)
        total_s = sum(c.duration_s for c in group)
        if len(group) >= th.http_n_plus_one_min_calls and total_s >= th.http_n_plus_one_min_total_s:
            span_s = max(c.started_s + c.duration_s for c in group) - min(
                c.started_s for c in group
            )
            found.append(
                Finding(
                    kind="n_plus_one_http",
                    key=key,
                    endpoint=endpoint,
                    severity="error"
                    if total_s >= 5 * th.http_n_plus_one_min_total_s
                    else "warning",
                    title=f"{len(group)} calls to {key} in one request ({total_s * 1e3:.0f} ms)",
                    evidence={
                        "calls": len(group),
                        "total_ms": round(total_s * 1e3, 3),
                        "span_ms": round(span_s * 1e3, 3),
                        "mean_ms": round(total_s / len(group) * 1e3, 3),
                        "library": group[0].library,
                        "host": host,
                        "path": template,
                        "site": site,
                    },
                    fix=_FIX_N_PLUS_ONE,
                )
            )
        unbounded = [c for c in group if c.timeout_s == math.inf]
        if unbounded:
            found.append(
                Finding(
                    kind="no_timeout",
                    key=key,
                    endpoint=endpoint,
                    severity="warning",
                    title=f"{key} called without a timeout",
                    evidence={
                        "calls": len(unbounded),
                        "max_ms": round(max(c.duration_s for c in unbounded) * 1e3, 3),
                        "library": unbounded[0].library,
                        "host": host,
                        "path": template,
                        "site": next((c.site for c in unbounded if c.site), site),
                    },
                    fix=_FIX_NO_TIMEOUT,
                )
            )
    return found
