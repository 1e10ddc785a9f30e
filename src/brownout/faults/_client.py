"""A small synchronous client for the proxy control API (``brownout proxy`` or Toxiproxy).

:class:`ProxyClient` speaks the JSON of Toxiproxy's HTTP API over one keep-alive
connection (stdlib :mod:`http.client`), plus brownout's ``http_faults`` endpoints. The fault
timeline calls it from its own thread, so a lock serialises requests. Every failure raises
:class:`ProxyApiError`: an error answer carries the API's status, message and field; a
connection problem has status 0 and names the API's address.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

from .._net import is_loopback
from .._version import __version__
from ..errors import BrownoutError, ScenarioError
from ._spec import HttpFault, Toxic

__all__ = ["ProxyApiError", "ProxyClient"]

_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class ProxyApiError(BrownoutError):
    """The control API answered with an error, or could not be reached.

    ``status`` is the HTTP status (0 when there was no answer: refused, timed out, not
    HTTP), ``message`` the API's one-line error and ``field`` the request field it names
    (``None`` when it names none)."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        self.status = status
        self.message = message
        self.field = field
        where = f"proxy API error {status}" if status else "proxy API"
        super().__init__(f"{where}: {message}")

    def __reduce__(self) -> tuple[object, ...]:
        return (ProxyApiError, (self.status, self.message, self.field))


class ProxyClient:
    """``ProxyClient("http://127.0.0.1:8474")``: the control API of a ``brownout proxy``
    (or a Toxiproxy server, for everything but the ``http_faults`` methods).

    ``api_url`` is ``http://host:port`` (``host:port`` alone is accepted too, as Toxiproxy's
    clients do); it must be on loopback unless ``allow_remote=True``. ``timeout_s`` bounds
    each request (connect, send and answer), in seconds. Use it as a context manager or call
    :meth:`close`."""

    def __init__(self, api_url: str, timeout_s: float = 5.0, *, allow_remote: bool = False) -> None:
        allowed = "an http:// URL such as http://127.0.0.1:8474"
        if not isinstance(api_url, str):
            raise ScenarioError("api_url", api_url, allowed)
        url = api_url if "://" in api_url else "http://" + api_url
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ScenarioError("api_url", api_url, allowed) from None
        host = parts.hostname
        if parts.scheme != "http" or not host or parts.path not in ("", "/") or parts.query:
            raise ScenarioError("api_url", api_url, allowed)
        if not is_loopback(host) and not allow_remote:
            raise ScenarioError(
                "api_url",
                api_url,
                "a loopback URL such as http://127.0.0.1:8474 (pass allow_remote=True to "
                "control a proxy on another host)",
                problem="is not on loopback",
            )
        if (
            isinstance(timeout_s, bool)
            or not isinstance(timeout_s, int | float)
            or not timeout_s > 0
        ):
            raise ScenarioError("timeout_s", timeout_s, "a number of seconds > 0 such as 5")
        self.host = host
        self.port = port if port is not None else 80
        self.timeout_s = float(timeout_s)
        shown = f"[{host}]" if ":" in host else host
        self.api_url = f"http://{shown}:{self.port}"
        self._conn: http.client.HTTPConnection | None = None
        self._used = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ProxyClient({self.api_url!r}, timeout_s={self.timeout_s:g})"

    # -- plumbing -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the keep-alive connection (a later request opens a new one)."""
        with self._lock:
            self._drop()

    def __enter__(self) -> ProxyClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._used = False

    def _exchange(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            self._used = False
        headers = {
            "Host": f"{self.host}:{self.port}",
            "User-Agent": f"brownout/{__version__}",
            "Accept": "application/json",
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        self._conn.request(method, path, body=body, headers=headers)
        response = self._conn.getresponse()
        data = response.read()
        self._used = True
        if response.will_close:
            self._drop()
        return response.status, data

    def request(self, method: str, path: str, doc: object = None) -> Any:
        """Send one request (``doc`` as its JSON body) and return the decoded JSON answer
        (the text for a non-JSON answer, ``None`` for an empty one).

        A keep-alive connection the server closed while idle is reopened once; any other
        failure raises :class:`ProxyApiError`."""
        body = None if doc is None else json.dumps(doc).encode()
        with self._lock:
            try:
                try:
                    status, data = self._exchange(method, path, body)
                except _STALE:
                    if not self._used:
                        raise
                    self._drop()  # the server closed an idle connection: once more, fresh
                    status, data = self._exchange(method, path, body)
            except TimeoutError:
                self._drop()
                raise ProxyApiError(
                    0,
                    f"no answer from the control API at {self.api_url} within {self.timeout_s:g} s",
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                reason = str(exc) or type(exc).__name__
                raise ProxyApiError(
                    0, f"cannot talk to the control API at {self.api_url}: {reason}"
                ) from None
        if not 200 <= status < 300:
            raise _error_of(status, data)
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return data.decode("utf-8", "replace").strip()

    # -- proxies --------------------------------------------------------------------------

    def version(self) -> str:
        """The server's version (Toxiproxy 2.x answers ``{"version": ...}``; brownout text)."""
        answer = self.request("GET", "/version")
        if isinstance(answer, dict) and "version" in answer:
            return str(answer["version"])
        return str(answer)

    def proxies(self) -> dict[str, dict[str, Any]]:
        """Every proxy, keyed by name (Toxiproxy's proxy JSON)."""
        answer: dict[str, dict[str, Any]] = self.request("GET", "/proxies")
        return answer

    def create(self, name: str, listen: str, upstream: str, enabled: bool = True) -> dict[str, Any]:
        """Create a proxy; ``listen`` ``"127.0.0.1:0"`` picks a free port (the answer has it)."""
        doc = {"name": name, "listen": listen, "upstream": upstream, "enabled": enabled}
        answer: dict[str, Any] = self.request("POST", "/proxies", doc)
        return answer

    def populate(self, proxies: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Create each proxy, or update the one of that name (Toxiproxy's ``/populate``)."""
        answer = self.request("POST", "/populate", [dict(p) for p in proxies])
        return list(answer["proxies"])

    def get(self, name: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.request("GET", _proxy_path(name))
        return answer

    def update(self, name: str, **fields: Any) -> dict[str, Any]:
        """Change ``listen``, ``upstream`` or ``enabled`` of a proxy."""
        answer: dict[str, Any] = self.request("POST", _proxy_path(name), fields)
        return answer

    def set_enabled(self, proxy: str, enabled: bool) -> dict[str, Any]:
        """Take a proxy down (``False``: it refuses connections) or bring it back."""
        return self.update(proxy, enabled=enabled)

    def delete(self, name: str) -> None:
        self.request("DELETE", _proxy_path(name))

    def reset(self) -> None:
        """Enable every proxy and remove every toxic and HTTP fault."""
        self.request("POST", "/reset")

    def stats(self, proxy: str) -> dict[str, int]:
        """brownout's counters of one proxy (connections, bytes, requests, faults applied)."""
        answer: dict[str, int] = self.request("GET", _proxy_path(proxy) + "/stats")
        return answer

    # -- toxics ---------------------------------------------------------------------------

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self.request("GET", _proxy_path(proxy) + "/toxics")
        return answer

    def add_toxic(self, proxy: str, toxic: Toxic | Mapping[str, Any]) -> dict[str, Any]:
        doc = toxic.to_json() if isinstance(toxic, Toxic) else dict(toxic)
        answer: dict[str, Any] = self.request("POST", _proxy_path(proxy) + "/toxics", doc)
        return answer

    def update_toxic(self, proxy: str, name: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Change a toxic's ``stream``, ``toxicity`` or ``attributes`` (merged)."""
        path = _proxy_path(proxy) + "/toxics/" + _segment(name)
        answer: dict[str, Any] = self.request("POST", path, dict(fields))
        return answer

    def remove_toxic(self, proxy: str, name: str) -> None:
        self.request("DELETE", _proxy_path(proxy) + "/toxics/" + _segment(name))

    # -- HTTP faults (brownout only) ------------------------------------------------------

    def http_faults(self, proxy: str) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self.request("GET", _proxy_path(proxy) + "/http_faults")
        return answer

    def add_http_fault(self, proxy: str, fault: HttpFault | Mapping[str, Any]) -> dict[str, Any]:
        doc = fault.to_json() if isinstance(fault, HttpFault) else dict(fault)
        answer: dict[str, Any] = self.request("POST", _proxy_path(proxy) + "/http_faults", doc)
        return answer

    def remove_http_fault(self, proxy: str, name: str) -> None:
        self.request("DELETE", _proxy_path(proxy) + "/http_faults/" + _segment(name))


def _segment(name: str) -> str:
    return quote(name, safe="")


def _proxy_path(name: str) -> str:
    return "/proxies/" + _segment(name)


def _error_of(status: int, data: bytes) -> ProxyApiError:
    """The error of an answer: brownout's and Toxiproxy's JSON ``{"error", "status"}``
    (plus ``field`` from brownout), or the first line of any other body."""
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        field = doc.get("field")
        return ProxyApiError(status, doc["error"], field if isinstance(field, str) else None)
    text = data.decode("utf-8", "replace").strip()
    first = text.splitlines()[0] if text else http.client.responses.get(status, "error")
    return ProxyApiError(status, first[:200])
