"""One worker of the open-model load generator.

The worker owns one segment of the global schedule. Its loop pops every event that is due
(an arrival, a client retry, the next request of a session), sends it at once, and records
three figures per attempt: response time from the *intended* start (coordinated omission
corrected), service time from the actual send, and send lag (the generator's own delay).
Requests never wait for earlier ones: when the class's in-flight cap is reached, or when
the generator reaches a request after its client timeout already passed, the request is
counted as ``dropped``, never silently skipped.

Client timeouts need no timer per request: requests of one class are sent in intended-time
order and share one timeout, so their deadlines are ordered too, and the loop checks the
head of each class's in-flight queue.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from .._net import is_loopback
from ..errors import ScenarioError, ThresholdError
from ..results import DROPPED, ERROR, OK, SHED, TIMEOUT, RunRecorder, Threshold, evaluate_all
from ..scenario import RequestPicker, Scenario, TrafficClass, arrivals
from ._http import ABORTED, RESPONSE, Exchange, HttpPool, build_request

__all__ = ["Target", "Worker", "parse_target"]

_ARRIVAL, _RETRY, _NEXT = 0, 1, 2
_BUILT_CACHE_MAX = 4096  # request byte strings kept per class (fixed paths are reused)


@dataclass(frozen=True, slots=True)
class Target:
    """Where the load goes: ``host:port`` and the ``Host`` header to send."""

    scheme: str
    host: str
    port: int
    host_header: str
    base_path: str


def parse_target(url: str, *, allow_hosts: tuple[str, ...] = (), field: str = "target") -> Target:
    """Parse and police a target URL: http only, and loopback unless the host is allowed."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ScenarioError(field, url, "an http:// URL with a host, such as http://127.0.0.1:8000")
    host = parts.hostname
    if not is_loopback(host) and host not in allow_hosts:
        raise ScenarioError(
            field,
            url,
            f"a loopback address (127.0.0.0/8, ::1, localhost); name {host} with --allow-host "
            "to load another host on purpose",
        )
    try:
        port = parts.port or 80
    except ValueError:
        raise ScenarioError(field, url, "a URL with a valid port (1-65535)") from None
    host_header = parts.netloc.rsplit("@", 1)[-1]
    return Target("http", host, port, host_header, parts.path.rstrip("/"))


class _Request:
    """A logical request: the user's click. Retries are further attempts of it."""

    __slots__ = ("attempt", "ci", "data", "depth", "ei", "intended_s", "session", "started_s")

    def __init__(
        self, ci: int, ei: int, data: bytes, started_s: float, session: _Session | None
    ) -> None:
        self.ci = ci
        self.ei = ei
        self.data = data
        self.started_s = started_s  # intended start of the first attempt (run offset)
        self.intended_s = started_s  # intended start of the current attempt
        self.attempt = 1
        self.session = session
        self.depth = 0  # crawl depth of the page this request fetches


class _Session:
    __slots__ = ("client", "cookies", "left")

    def __init__(self, left: int, client: str | None) -> None:
        self.left = left
        self.cookies: dict[str, str] = {}
        self.client = client  # the simulated client address (X-Forwarded-For), if any


_HREF = re.compile(rb"""href\s*=\s*["']([^"'#]+)""", re.IGNORECASE)


class _ClassRun:
    """The runtime of one traffic class in this worker."""

    def __init__(self, index: int, spec: TrafficClass, worker: Worker, seed: int) -> None:
        self.index = index
        self.spec = spec
        self.timeout_s = spec.timeout_s
        self.max_in_flight = spec.max_in_flight
        self.clients = spec.clients
        self.rng = random.Random(seed)
        self.picker = RequestPicker(spec, self.rng)
        self.in_flight = 0
        self.pending: deque[tuple[float, Exchange]] = deque()
        self.retry = spec.retry
        self.keep_headers = spec.session is not None and spec.session.cookies
        self.crawl = spec.crawl
        self.frontier: deque[tuple[str, int]] = deque()
        self.seen: set[str] = set()
        self.crawled = 0
        base_headers = dict(spec.headers)
        if spec.user_agent:
            base_headers.setdefault("User-Agent", spec.user_agent)
        self.base_headers = base_headers
        self.endpoint_ids: dict[str, int] = {}
        self._templates: dict[int, tuple[bytes, bytes]] = {}
        # Request bytes without cookies, by (method, path, id(headers), body): the picker
        # hands out each spec's own headers dict, so fixed paths are built once. Bounded,
        # since paths with drawn keys vary.
        self._built: dict[tuple[str, str, int, bytes | None], bytes] = {}
        self.worker = worker

    def client_address(self) -> str | None:
        """A simulated client address for a new session or request (None: no header)."""
        if not self.clients:
            return None
        i = self.rng.randrange(self.clients)
        return f"10.{self.index % 256}.{i >> 8}.{i & 255}"

    def request_bytes(  # noqa: PLR0917 - internal, per request
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        cookies: str | None,
        client: str | None = None,
    ) -> bytes:
        if client is not None:
            headers = {**headers, "X-Forwarded-For": client}
            return self._build(method, path, headers, body, cookies)
        if cookies is None:
            key = (method, path, id(headers), body)
            built = self._built.get(key)
            if built is None:
                built = self._build(method, path, headers, body, None)
                if len(self._built) < _BUILT_CACHE_MAX:
                    self._built[key] = built
            return built
        return self._build(method, path, headers, body, cookies)

    def _build(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        cookies: str | None,
    ) -> bytes:
        target = self.worker.target
        merged = {**self.base_headers, **headers}
        if cookies:
            merged["Cookie"] = cookies
        return build_request(method, target.host_header, target.base_path + path, merged, body)


class Worker:
    """Runs one segment of a scenario against a live target and records what happened.

    ``segment=(k, n)`` keeps arrivals ``i`` with ``i % n == k - 1`` of the one global
    schedule. ``start_at`` is the common start time on ``clock`` (``time.monotonic`` by
    default); every worker of a run uses the same instant, so their segments interleave as
    one schedule. ``on_interval(rows)`` receives the timeline rows of each closed interval.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        segment: tuple[int, int] = (1, 1),
        clock: Callable[[], float],
        start_at: float,
        on_interval: Callable[[list[dict[str, Any]]], object] | None = None,
        drain_s: float | None = None,
        abort_on: tuple[Threshold, ...] = (),
    ) -> None:
        if scenario.target is None:
            raise ScenarioError("target", None, "an http:// URL (or pass one on the command line)")
        self.scenario = scenario
        self.target = parse_target(scenario.target, allow_hosts=scenario.allow_hosts)
        self.segment = segment
        self.clock = clock
        self.t0 = start_at
        self.on_interval = on_interval
        self.duration_s = scenario.duration_s
        self.drain_s = (
            drain_s
            if drain_s is not None
            else max(c.timeout_s for c in scenario.classes) * _max_attempts(scenario)
        )
        self.classes = [
            _ClassRun(i, c, self, scenario.seed * 1_000_003 + i * 7919 + segment[0])
            for i, c in enumerate(scenario.classes)
        ]
        self.recorder = RunRecorder(
            classes=[(c.name, c.timeout_s) for c in scenario.classes],
            interval_s=scenario.interval_s,
        )
        self.pool = HttpPool(self.target.host, self.target.port, now=clock)
        self.keeping_pool = HttpPool(
            self.target.host, self.target.port, now=clock, keep_responses=True
        )
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = itertools.count()
        self._stopping = False
        self.abort_on = abort_on
        self.aborted: list[dict[str, Any]] = []  # the thresholds that stopped the run

    # -- scheduling ----------------------------------------------------------------------

    def _push(self, when: float, kind: int, payload: Any) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), kind, payload))

    def stop(self) -> None:
        """Stop sending new requests (Ctrl-C); in-flight ones are given up at once."""
        self._stopping = True

    async def run(self) -> dict[str, Any]:
        """Send the segment; returns this worker's results document (``kind: load``)."""
        streams = [
            arrivals(
                c.spec,
                seed=self.scenario.seed + i,
                duration_s=self.duration_s,
                segment=self.segment,
            )
            for i, c in enumerate(self.classes)
        ]
        for ci, stream in enumerate(streams):
            first = next(stream, None)
            if first is not None:
                self._push(first, _ARRIVAL, (ci, stream))
        clock, t0, heap, rec = self.clock, self.t0, self._heap, self.recorder
        interval = self.scenario.interval_s
        next_flush = interval
        end_s = self.duration_s
        try:
            await _sleep_until(clock, t0)
            while True:
                now = clock() - t0
                if self._stopping:
                    break
                due = now  # never early: a request goes at or after its intended time
                while heap and heap[0][0] <= due:
                    when, _, kind, payload = heapq.heappop(heap)
                    if kind == _ARRIVAL:
                        ci, stream = payload
                        self._arrive(self.classes[ci], when, now)
                        nxt = next(stream, None)
                        if nxt is not None:
                            self._push(nxt, _ARRIVAL, payload)
                    elif kind == _RETRY:
                        self._send(payload, now)
                    else:
                        cls, session = payload
                        self._issue(cls, when, now, session)
                    now = clock() - t0
                self._expire(now)
                while now >= next_flush:
                    self._flush(next_flush)
                    next_flush += interval
                if not heap and (
                    now >= end_s + self.drain_s or not any(c.in_flight for c in self.classes)
                ):
                    break
                delay = heap[0][0] - now if heap else 0.005
                await asyncio.sleep(min(max(delay, 0.0), 0.005))
        finally:
            now = clock() - t0
            for cls in self.classes:  # whatever is still out when the run ends timed out
                while cls.pending:
                    _, exchange = cls.pending.popleft()
                    exchange.abort()
            self.pool.close()
            self.keeping_pool.close()
            self._flush(now if now < next_flush else next_flush)
        doc = rec.finish(duration_s=max(now, 0.0))
        if self.aborted:
            doc["aborted"] = self.aborted
        return doc

    def _flush(self, at: float) -> None:
        rows = self.recorder.flush(at, in_flight=sum(c.in_flight for c in self.classes))
        if self.on_interval is not None and rows:
            self.on_interval(rows)
        if self.abort_on and rows and not self._stopping:
            self._check_abort(at)

    def _check_abort(self, at: float) -> None:
        """Stop the run once an ``abort_on_fail`` threshold fails on the data so far (a
        threshold with nothing to observe yet, or a scope not seen yet, does not count)."""
        snapshot = self.recorder.snapshot(at)
        try:
            verdicts = evaluate_all(self.abort_on, snapshot)
        except ThresholdError:
            return
        failed = [v for v in verdicts if v["observed"] is not None and not v["passed"]]
        if failed:
            self.aborted = failed
            self.stop()

    # -- requests ------------------------------------------------------------------------

    def _endpoint(self, cls: _ClassRun, name: str) -> int:
        ei = cls.endpoint_ids.get(name)
        if ei is None:
            ei = cls.endpoint_ids[name] = self.recorder.endpoint(cls.index, name)
        return ei

    def _arrive(self, cls: _ClassRun, when: float, now: float) -> None:
        session = cls.spec.session
        if session is not None:
            count = cls.rng.randint(session.min_requests, session.max_requests)
            self._issue(cls, when, now, _Session(count, cls.client_address()))
        else:
            self._issue(cls, when, now, None)

    def _issue(self, cls: _ClassRun, when: float, now: float, session: _Session | None) -> None:
        spec, method, path, headers, body = cls.picker.pick()
        name = spec.name
        depth = 0
        if cls.crawl is not None:
            path, depth = self._crawl_next(cls)
            name = "crawl"
        ei = self._endpoint(cls, name)
        rec = self.recorder
        rec.offered(cls.index)
        if cls.in_flight >= cls.max_in_flight or now - when >= cls.timeout_s:
            rec.request(cls.index, ei, DROPPED, 0, when)
            self._session_next(cls, session, now)
            return
        cookies = None
        if session is not None:
            session.left -= 1
            if session.cookies:
                cookies = "; ".join(f"{k}={v}" for k, v in session.cookies.items())
            client = session.client
        else:
            client = cls.client_address() if cls.clients else None
        data = cls.request_bytes(method, path, headers, body, cookies, client)
        req = _Request(cls.index, ei, data, when, session)
        req.depth = depth
        cls.in_flight += 1
        self._send(req, now)

    def _send(self, req: _Request, now: float) -> None:
        cls = self.classes[req.ci]
        keep_body = cls.crawl is not None
        exchange = Exchange(
            req.data,
            self._done,
            req,
            keep_headers=cls.keep_headers or keep_body,
            keep_body=keep_body,
        )
        cls.pending.append((req.intended_s + cls.timeout_s, exchange))
        (self.keeping_pool if exchange.headers is not None else self.pool).send(exchange)

    def _expire(self, now: float) -> None:
        for cls in self.classes:
            pending = cls.pending
            while pending and (pending[0][0] <= now or pending[0][1].done):
                _, exchange = pending.popleft()
                if not exchange.done:
                    exchange.abort()

    def _done(self, exchange: Exchange) -> None:
        req: _Request = exchange.user
        cls = self.classes[req.ci]
        t0 = self.t0
        done_abs = self.clock()
        now = done_abs - t0
        rec = self.recorder
        if exchange.sent_s > 0:
            service_us = int((done_abs - exchange.sent_s) * 1e6)
            lag_us = int((exchange.sent_s - t0 - req.intended_s) * 1e6)
            rec.attempt(cls.index, req.ei, service_us, max(lag_us, 0), req.attempt > 1)
        if exchange.outcome == RESPONSE:
            status = exchange.status
            if status < 400:
                outcome = OK
            elif status in (429, 503):
                outcome = SHED
            else:
                outcome = ERROR
        elif exchange.outcome == ABORTED:
            outcome = TIMEOUT
        else:
            outcome = ERROR
        retry = cls.retry
        if (
            outcome != OK
            and req.attempt < retry.attempts
            and retry.mode != "none"
            and not self._stopping
        ) and (
            (outcome == TIMEOUT and retry.on_timeout)
            or (exchange.outcome not in (RESPONSE, ABORTED) and retry.on_error)
            or (exchange.outcome == RESPONSE and exchange.status in retry.on_status)
        ):
            delay = retry.delay_s(req.attempt, cls.rng.random())  # the formula sim uses too
            req.attempt += 1
            req.intended_s = now + delay
            self._push(req.intended_s, _RETRY, req)
            return
        cls.in_flight -= 1
        rec.request(cls.index, req.ei, outcome, int((now - req.started_s) * 1e6), req.started_s)
        if outcome == OK and exchange.headers is not None:
            self._learn(cls, req, exchange)
        self._session_next(cls, req.session, now)

    def _session_next(self, cls: _ClassRun, session: _Session | None, now: float) -> None:
        spec = cls.spec.session
        if session is None or spec is None or session.left <= 0 or self._stopping:
            return
        think = cls.rng.expovariate(1.0 / spec.think_time_s) if spec.think_time_s > 0 else 0.0
        when = now + think
        if when < self.duration_s:
            self._push(when, _NEXT, (cls, session))

    # -- cookies and crawling ------------------------------------------------------------

    def _learn(self, cls: _ClassRun, req: _Request, exchange: Exchange) -> None:
        session = req.session
        for name, value in exchange.headers or ():
            key = name.lower()
            if key == b"set-cookie" and session is not None:
                pair = value.split(b";", 1)[0].decode("latin-1")
                if "=" in pair:
                    k, v = pair.split("=", 1)
                    session.cookies[k.strip()] = v.strip()
        if cls.crawl is not None and exchange.body:
            content_type = exchange.header(b"content-type") or b""
            if b"html" in content_type:
                self._discover(cls, req, b"".join(exchange.body))

    def _crawl_next(self, cls: _ClassRun) -> tuple[str, int]:
        crawl = cls.crawl
        assert crawl is not None
        if not cls.frontier or cls.crawled >= crawl.max_pages:
            cls.frontier.clear()
            cls.seen = set(crawl.start)
            cls.crawled = 0
            cls.frontier.extend((p, 0) for p in crawl.start)
        path, depth = cls.frontier.popleft()
        cls.crawled += 1
        return path, depth

    def _discover(self, cls: _ClassRun, req: _Request, html: bytes) -> None:
        crawl = cls.crawl
        assert crawl is not None
        depth = req.depth + 1
        if depth > crawl.max_depth:
            return
        for match in _HREF.finditer(html):
            link = match.group(1).decode("latin-1", "replace")
            url = urlsplit(urljoin("http://h/", link))
            if url.netloc not in ("h", self.target.host_header) or not url.path.startswith("/"):
                continue
            path = url.path + (f"?{url.query}" if url.query else "")
            if path not in cls.seen and len(cls.seen) < crawl.max_pages * 4:
                cls.seen.add(path)
                cls.frontier.append((path, depth))


def _max_attempts(scenario: Scenario) -> int:
    return max((c.retry.attempts if c.retry.mode != "none" else 1) for c in scenario.classes)


async def _sleep_until(clock: Callable[[], float], when: float) -> None:
    delay = when - clock()
    if delay > 0:
        await asyncio.sleep(delay)
