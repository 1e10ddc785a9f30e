"""The simulator's discrete-event core: a heap of timed events and the runtime objects.

Everything here runs in virtual time: ``_Engine.now`` (seconds) moves from event to event;
nothing sleeps, nothing reads the wall clock. Events are tuples ``(time, seq, fn, arg)`` on
one binary heap (``seq`` breaks ties in scheduling order, so a run is deterministic);
running one is ``fn(arg)``.

Timeouts do not use the heap per call: every call step with a timeout ``d`` owns a
:class:`_Wheel`, a FIFO of the attempts it sent, in sending order, which is also expiry
order (``now + d`` never decreases). One heap event waits for the oldest live attempt; an
attempt that is answered first is only marked, and skipped when the wheel reaches it. A
queue's timeouts (fixed or controlled delay) work the same way on the queue itself, whose
expiries are also non-decreasing in arrival order.

Time averages are kept as sums of entry and exit times: over a window ``[w, T]`` the area
under "number inside" is ``sum(exit times) + inside_at_T * T - sum(entry times)``, entry
times before ``w`` counted as ``w``. That is exact (it is the sum of the clipped stays), so
Little's law ``L = lambda * W`` holds on the outputs by construction and a test of it checks
the bookkeeping.

The runtime objects mirror the topology: ``_StationRT`` (servers, queue, statistics),
``_EndpointRT`` (compiled steps: a work step is its sampling function, a call step a
``_CallRT``), ``_CallRT`` (target, timeout, the real guard objects, statistics),
``_Visit`` (one attempt's stay at a station, or a client's request when ``cls`` is set).
"""

from __future__ import annotations

import itertools
import math
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from heapq import heappop, heappush
from typing import Any

from ..errors import BulkheadFull, DeadlineExceeded, InvalidConfig

__all__ = ["ERROR", "OK", "OUTCOME_NAMES", "REFUSED", "REJECTED", "TIMEOUT", "VirtualClock"]

OK = 0
"""The call succeeded."""
ERROR = 1
"""The callee answered an error (or dropped work whose deadline had passed)."""
TIMEOUT = 2
"""The caller's timeout fired first."""
REJECTED = 3
"""The callee shed it: its queue was full, or it waited past the queue's time limit (or a
call below was shed or refused and the callee passed that on, as a 503)."""
REFUSED = 4
"""A policy of the caller refused it before sending (open breaker, throttle, bulkhead,
concurrency or rate limit)."""
OUTCOME_NAMES = ("ok", "error", "timeout", "rejected", "refused")

_INF = math.inf
_FIFO, _LIFO, _ADAPTIVE = 0, 1, 2
_NO_TIMEOUT, _FIXED, _CODEL = 0, 1, 2


class _Stop(Exception):
    """Raised by the end-of-run event to leave the loop (no per-event check needed)."""


class _SimFailure(Exception):
    """How a failed attempt looks to a policy that classifies exceptions: an HTTP error
    with ``status_code`` 500 (an error) or 503 (shed by the callee)."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"simulated HTTP {status_code}")
        self.status_code = status_code


def outcome_exception(outcome: int, timeout_s: float | None = None) -> BaseException:
    """The exception a real client would have seen for ``outcome`` (for classification)."""
    if outcome == TIMEOUT:
        return DeadlineExceeded("simulated attempt timeout", timeout_s=timeout_s)
    return _SimFailure(503 if outcome == REJECTED else 500)


# -- the clock -------------------------------------------------------------------------


class _TimerHandle:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """brownout's :class:`~brownout._clock.Clock` on a simulation's virtual time.

    ``now()`` is the time of the event being run, in seconds from the start of the run.
    ``call_later(delay, fn)`` schedules ``fn()`` as a simulation event. ``sleep`` and
    ``asleep`` are not usable: a simulation never blocks, it schedules; they raise
    ``RuntimeError``. Build guard policies with ``clock=simulation.clock`` and they read
    virtual time.
    """

    __slots__ = ("_engine",)

    def __init__(self, engine: _Engine) -> None:
        self._engine = engine

    def now(self) -> float:
        return self._engine.now

    def sleep(self, seconds: float) -> None:
        raise RuntimeError(
            "VirtualClock.sleep: a simulation cannot block; schedule with call_later instead"
        )

    async def asleep(self, seconds: float) -> None:
        raise RuntimeError(
            "VirtualClock.asleep: a simulation runs no event loop; schedule with call_later"
        )

    def call_later(self, delay: float, callback: Callable[[], object]) -> _TimerHandle:
        handle = _TimerHandle()
        engine = self._engine

        def fire(_: object) -> None:
            if not handle.cancelled:
                callback()

        engine.at(engine.now + max(delay, 0.0), fire, None)
        return handle

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._engine.now!r})"


# -- runtime objects -------------------------------------------------------------------


class _Visit:
    """One attempt's stay at a station (``st``), or a client request (``st`` None, ``cls``
    set; a request without retry, policies or cache is its own visit, ``caller`` None).

    While the visit runs a call step it keeps that call's state: ``call`` (the step),
    ``tries``, ``prev`` (last backoff, s), ``sent``
    (when the attempt left), ``permit`` / ``lim`` (breaker and limit permits), ``key`` (the
    cache key it loads) and ``t0`` (when the call started).
    """

    __slots__ = (
        "born",
        "call",
        "caller",
        "cls",
        "deadline",
        "enq",
        "ep",
        "expires",
        "expiry",
        "failed",
        "i",
        "key",
        "lim",
        "live",
        "permit",
        "pool",
        "prev",
        "sent",
        "st",
        "t0",
        "tries",
    )

    born: float
    call: _CallRT
    caller: _Visit | None
    cls: _ClassRT
    deadline: float
    enq: float
    ep: _EndpointRT
    expires: float
    expiry: float
    failed: int
    i: int
    key: str | None
    lim: Any
    live: bool
    permit: int | None
    pool: _StationRT | None
    prev: float
    sent: float
    st: _StationRT
    t0: float
    tries: int


class _Request(_Visit):
    """A client's request: the root of its calls (it has no station)."""

    __slots__ = ()


class _StationRT:
    __slots__ = (
        "adaptive",
        "base_servers",
        "busy",
        "busy0",
        "drop",
        "dropped",
        "dropped_running",
        "endpoints",
        "err",
        "expired",
        "extra",
        "factor",
        "interval_s",
        "lifo",
        "name",
        "nonempty_since",
        "q0",
        "qcap",
        "qcorr",
        "queue",
        "rand",
        "rejected",
        "scan_at",
        "servers",
        "serving",
        "shed_q",
        "simple",
        "started",
        "sum_end",
        "sum_start",
        "target_s",
        "timeout_kind",
        "timeout_s",
        "unlimited",
        "waits",
    )

    def __init__(self, spec: Any, rand: Callable[[], float]) -> None:
        self.name: str = spec.name
        self.unlimited = spec.servers is None
        self.servers: int = 1 << 62 if spec.servers is None else spec.servers
        self.base_servers = self.servers
        self.qcap: int = 1 << 62 if spec.max_queue is None else spec.max_queue
        order = spec.discipline
        self.lifo = order == "lifo"
        self.adaptive = order == "adaptive_lifo"
        self.interval_s: float = spec.codel_interval_s
        self.target_s: float = spec.codel_target_s
        if spec.codel:
            self.timeout_kind = _CODEL
        elif spec.queue_timeout_s is not None:
            self.timeout_kind = _FIXED
        else:
            self.timeout_kind = _NO_TIMEOUT
        self.timeout_s: float = spec.queue_timeout_s or 0.0
        self.drop: bool = spec.abandoned == "drop"
        # FIFO without time limits or drops: a freed server just takes the oldest visit.
        self.simple = order == "fifo" and self.timeout_kind == _NO_TIMEOUT and not self.drop
        self.rand = rand
        self.queue: deque[_Visit] = deque()
        self.busy = 0
        self.serving = False
        self.nonempty_since = 0.0
        self.scan_at = _INF
        self.factor = 1.0  # a fault's slowdown: work steps take factor * s + extra
        self.extra = 0.0
        self.err = ERROR  # what an error draw answers (a fault may make it a 503, REJECTED)
        self.endpoints: list[_EndpointRT] = []
        self.reset(0.0)

    def reset(self, at: float) -> None:
        """Start counting afresh at ``at`` (what is inside now counts from ``at``)."""
        self.busy0 = self.busy
        self.q0 = len(self.queue)
        self.started = 0
        self.rejected = 0
        self.expired = 0
        self.dropped = 0
        self.dropped_running = 0
        self.sum_start = self.busy * at
        self.sum_end = 0.0
        # Queue area = waits of the served + queue times of the shed + the stays of those
        # still waiting at the end - what of the stays of those waiting now lies before ``at``.
        self.qcorr = math.fsum(at - v.enq for v in self.queue)
        self.shed_q = 0.0
        self.waits = array("d")  # the waits of the visits served from the queue


class _EndpointRT:
    """An endpoint at run time. ``single`` is the sampling function of an endpoint whose
    only step is a work step (its visits skip ``advance``: start, then finish)."""

    __slots__ = ("base_error_rate", "error_rate", "first", "n", "name", "single", "st", "steps")

    def __init__(self, name: str, st: _StationRT, error_rate: float) -> None:
        self.name = name
        self.st = st
        self.base_error_rate = error_rate
        self.error_rate = error_rate  # the larger of its own and a fault's
        st.endpoints.append(self)
        self.steps: list[Any] = []  # a sampling function (work) or a _CallRT (call)
        self.single: Callable[[], float] | None = None
        self.first: Callable[[], float] | None = None
        self.n = 0

    def seal(self) -> None:
        """The steps are complete: note the shapes that have a fast path (``single``: one
        work step; ``first``: several steps, the first a work step)."""
        steps = self.steps
        self.n = len(steps)
        if steps and steps[0].__class__ is not _CallRT:
            if len(steps) == 1:
                self.single = steps[0]
            else:
                self.first = steps[0]


class _Wheel:
    """The pending timeouts of one call step: attempts in sending (= expiry) order."""

    __slots__ = ("armed", "q")

    def __init__(self) -> None:
        self.q: deque[_Visit] = deque()
        self.armed = False


class _CallRT:
    """A call step at run time: where it goes, its guard objects and its statistics."""

    __slots__ = (
        "abandoned",
        "attempts",
        "breaker",
        "breaker_failed",
        "breaker_only",
        "budget",
        "bulkhead",
        "cache",
        "cache_hits",
        "cache_joined",
        "cache_misses",
        "draw_key",
        "exc",
        "fail",
        "guarded",
        "label",
        "limit",
        "loading",
        "outcomes",
        "pool",
        "ratelimit",
        "refused",
        "retries",
        "retry",
        "retryable",
        "slot",
        "target",
        "throttle",
        "throttle_accepts",
        "timeout",
        "trace",
        "ttl_s",
        "wheel",
    )

    def __init__(self, label: str, target: _EndpointRT, timeout_s: float | None) -> None:
        self.label = label
        self.target = target
        self.slot = 0  # a client call: its index in the class's calls
        self.trace: array[float] | None = None  # a traced client call: its attempts
        self.timeout = _INF if timeout_s is None else timeout_s
        self.wheel = None if timeout_s is None else _Wheel()
        self.retry: Any = None
        self.budget: Any = None
        self.retryable = (False, False, False, False, False)
        self.exc = tuple(outcome_exception(o, timeout_s) for o in range(5))
        self.fail = True
        self.breaker: Any = None
        self.breaker_failed: tuple[bool | None, ...] = (False, True, True, True, None)
        self.throttle: Any = None
        self.throttle_accepts: tuple[bool | None, ...] = (True, True, True, False, None)
        self.ratelimit: Any = None
        self.bulkhead: Any = None
        self.limit: Any = None
        self.guarded = False
        self.breaker_only = False
        self.pool: _StationRT | None = None
        self.cache: Any = None
        self.draw_key: Callable[[], str] | None = None
        self.ttl_s = 0.0
        self.loading: dict[str, list[_Visit]] = {}
        self.reset()

    def reset(self) -> None:
        self.attempts = 0
        self.retries = 0
        self.outcomes = [0, 0, 0, 0, 0]
        self.refused: dict[str, int] = {}
        self.abandoned: dict[str, int] = {}
        self.cache_hits = 0
        self.cache_misses = 0
        self.cache_joined = 0
        if self.trace is not None:
            self.trace = array("d")


class _ClassRT:
    """A traffic class at run time: its arrivals, its client call(s) and its counts."""

    __slots__ = (
        "calls",
        "cum_weights",
        "direct",
        "done",
        "good",
        "in0",
        "index",
        "lat",
        "name",
        "offered",
        "pick",
        "sum_end",
        "sum_start",
        "timeout",
        "times",
        "trace",
        "wheel",
    )

    def __init__(  # noqa: PLR0917 - internal
        self,
        name: str,
        index: int,
        calls: list[_CallRT],
        weights: list[float],
        times: Iterator[float],
        timeout_s: float | None,
        pick: Callable[[], float],
    ) -> None:
        self.name = name
        self.index = index
        self.calls = calls
        total = math.fsum(weights)
        acc, cum = 0.0, []
        for w in weights:
            acc += w
            cum.append(acc / total)
        self.cum_weights = cum
        self.times = times
        self.timeout = _INF if timeout_s is None else timeout_s
        self.pick = pick
        self.offered = 0
        self.done = [0, 0, 0, 0, 0]
        self.in0 = 0
        self.trace: array[float] | None = None  # when traced: (end, latency, outcome, slot)*
        # A single call without retry or policies (a timeout is fine): the request is the
        # visit itself, its timeout in the call's wheel.
        only = calls[0]
        plain = only.retry is None and not only.guarded and only.cache is None
        self.direct = only.target if len(calls) == 1 and plain else None
        self.wheel = only.wheel if self.direct is not None else None
        self.reset(0.0)

    @property
    def goodput(self) -> int:
        """OK requests within the client timeout (for a direct class, one attempt each, every
        OK answer came before the timeout fired)."""
        return self.done[OK] if self.direct is not None else self.good

    @property
    def in_system(self) -> int:
        """Requests that arrived and have not ended (``offered + in0 - ended``)."""
        return self.offered + self.in0 - sum(self.done)

    def reset(self, at: float) -> None:
        inside = self.in_system
        self.in0 = inside
        self.offered = 0
        self.done = [0, 0, 0, 0, 0]
        self.good = 0
        self.lat = array("d")
        if self.trace is not None:
            self.trace = array("d")
        self.sum_start = inside * at
        self.sum_end = 0.0


# -- the engine ------------------------------------------------------------------------


class _Engine:
    """The event loop and the behaviour of visits, calls and stations.

    ``run(until)`` executes events in time order up to ``until`` (inclusive). Handlers
    schedule further events with :meth:`at` (or push on ``heap`` directly on hot paths).

    A visit's life: ``arrive`` at its station (start at once, queue, or be rejected);
    ``advance`` through its steps (a work step is a heap event, a call step starts a call);
    ``finish`` frees the server, serves the queue and answers the caller. A call's life:
    ``call_start`` (cache, budget), ``attempt`` (policies, pool, timeout, then the child
    visit arrives), ``answered`` (policies told, then success or ``failed``: retry or give
    up), ``call_done`` (the visit moves on). A pooled attempt first takes a connection at
    the pool station (waiting in its queue when none is free) and gives it back when the
    callee answers, however late (even after its caller gave up).
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.heap: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self.seq = itertools.count().__next__
        self.clip = 0.0  # statistics count from here (the warm-up end)
        self.classes: list[_ClassRT] = []
        self.stations: list[_StationRT] = []
        self.calls: list[_CallRT] = []
        # (time, overall counts, (busy, queued) per station, offered per class)
        self.ticks: list[
            tuple[float, tuple[int, ...], tuple[tuple[int, int], ...], tuple[int, ...]]
        ] = []
        self.interval_s = 1.0
        self.ticks_done = 0
        self.end = 0.0
        # The handlers as bound methods made once (pushing ``self.finish`` would make a new
        # bound method object per event).
        self.on_finish = self.finish
        self.on_advance = self.advance
        self.on_arrival = self.client_arrival
        self.on_wheel = self.wheel_fire
        self.on_scan = self.scan
        self.on_attempt = self.attempt

    def at(self, t: float, fn: Callable[[Any], None], arg: Any) -> None:
        heappush(self.heap, (t, self.seq(), fn, arg))

    def run(self, until: float) -> None:
        """Run every event due at or before ``until``; leave ``now`` at ``until``."""
        heap = self.heap
        pop = heappop
        heappush(heap, (until, 1 << 62, _stop, None))
        try:
            while True:
                t, _, fn, arg = pop(heap)
                self.now = t
                fn(arg)
        except _Stop:
            pass
        self.now = until

    # -- clients -------------------------------------------------------------------------

    def client_arrival(self, cls: _ClassRT) -> None:
        now = self.now
        t = next(cls.times, None)
        if t is not None:
            heappush(self.heap, (t if t > now else now, self.seq(), self.on_arrival, cls))
        cls.offered += 1
        cls.sum_start += now
        ep = cls.direct
        if ep is not None:  # the fast path: the request is the visit
            v = _Visit()
            v.cls = cls
            v.born = now
            v.caller = None
            v.pool = None
            v.ep = ep
            v.st = ep.st
            v.failed = OK
            v.live = True
            wheel = cls.wheel
            if wheel is None:
                v.deadline = _INF
            else:
                v.deadline = v.expires = expires = now + cls.timeout
                wheel.q.append(v)
                if not wheel.armed:
                    wheel.armed = True
                    heappush(self.heap, (expires, self.seq(), self.on_wheel, wheel))
            first = ep.first
            if first is not None:
                st = ep.st
                if st.busy < st.servers:
                    # arrive() and its start, inlined for a free server and a first work step
                    st.busy += 1
                    st.started += 1
                    st.sum_start += now
                    v.i = 1
                    s = first() * st.factor + st.extra
                    heappush(self.heap, (now + s, self.seq(), self.on_advance, v))
                    return
            self.arrive(v)
            return
        r = _Request()
        r.cls = cls
        r.born = now
        r.deadline = _INF
        calls = cls.calls
        if len(calls) == 1:
            self.call_start(r, calls[0])
        else:
            u = cls.pick()
            i = 0
            for i, cum in enumerate(cls.cum_weights):  # noqa: B007 - i is the pick
                if u < cum:
                    break
            self.call_start(r, calls[i])

    def reply(self, v: _Visit, outcome: int) -> None:
        """``v`` ends without finishing at a server (rejected, expired, dropped): give back
        its pool connection if it holds one, and answer its caller (or end the request)."""
        v.live = False
        pool = v.pool
        if pool is not None and v.st is not pool:
            self.release(pool)
        caller = v.caller
        if caller is None:
            self.request_done(v, outcome)
        else:
            self.answered(caller, outcome)

    def request_done(self, r: _Visit, outcome: int) -> None:
        cls = r.cls
        now = self.now
        cls.done[outcome] += 1
        latency = now - r.born
        cls.lat.append(latency)
        if outcome == OK and latency <= cls.timeout:
            cls.good += 1
        cls.sum_end += now
        trace = cls.trace
        if trace is not None:  # a direct request: its only call is slot 0
            trace.extend((now, latency, outcome, 0.0))

    # -- calls ---------------------------------------------------------------------------

    def call_start(self, v: _Visit, c: _CallRT) -> None:
        """Visit ``v`` starts call step ``c`` (cache look-up, then its first attempt)."""
        v.call = c
        v.tries = 0
        if c.cache is not None:
            now = self.now
            v.t0 = now
            v.key = None
            key = c.draw_key()  # type: ignore[misc]
            entry = c.cache.get(key)
            if entry is not None and now < entry.expires_at:
                c.cache_hits += 1
                self.call_done(v, OK)
                return
            waiters = c.loading.get(key)
            if waiters is not None:  # single flight: wait for the load in progress
                c.cache_joined += 1
                waiters.append(v)
                return
            c.loading[key] = []
            c.cache_misses += 1
            v.key = key
        if c.budget is not None:
            c.budget.on_request(self.now)
        self.attempt(v)

    def attempt(self, v: _Visit) -> None:
        """Send the next attempt of ``v``'s call (after its policies admit it)."""
        c = v.call
        now = self.now
        tries = v.tries = v.tries + 1
        c.attempts += 1
        if tries > 1:
            c.retries += 1
        if c.guarded:
            if c.breaker_only:  # admit(), inlined for the commonest guard
                permit = c.breaker.try_acquire(now)
                reason = "circuit_open" if permit is None else None
                v.permit = permit
            else:
                reason = self.admit(v, c, now)
            if reason is not None:
                c.refused[reason] = c.refused.get(reason, 0) + 1
                self.failed(v, REFUSED)
                return
        child = _Visit()
        ep = c.target
        child.ep = ep
        child.caller = v
        child.failed = OK
        child.live = True
        expires = now + c.timeout
        deadline = v.deadline
        child.deadline = expires if expires < deadline else deadline
        v.sent = now
        wheel = c.wheel
        if wheel is not None:
            child.expires = expires
            wheel.q.append(child)
            if not wheel.armed:
                wheel.armed = True
                heappush(self.heap, (expires, self.seq(), self.on_wheel, wheel))
        pool = c.pool
        child.pool = pool
        # A pooled attempt queues at the pool first (``st`` is the pool until it holds a
        # connection; ``arrive`` then sends it on to its endpoint's station).
        if pool is None:
            st = child.st = ep.st
            if st.busy < st.servers and ep.first is not None:
                # arrive() and its start, inlined for the commonest callee: a free server
                # and a first step that is work
                st.busy += 1
                st.started += 1
                st.sum_start += now
                child.i = 1
                heappush(
                    self.heap,
                    (now + ep.first() * st.factor + st.extra, self.seq(), self.on_advance, child),
                )
                return
        else:
            child.st = pool
        self.arrive(child)

    def admit(self, v: _Visit, c: _CallRT, now: float) -> str | None:
        """Ask the call's policies, in the order of ``RECOMMENDED_ORDER``; None: admitted."""
        breaker = c.breaker
        if breaker is not None:
            permit = breaker.try_acquire(now)
            if permit is None:
                return "circuit_open"
            v.permit = permit
        reason = None
        if c.throttle is not None and not c.throttle.allow(now):
            reason = "throttled"
        elif c.ratelimit is not None and not c.ratelimit.check().allowed:
            reason = "rate_limited"
        elif c.bulkhead is not None:
            try:
                c.bulkhead.__enter__()
            except BulkheadFull:
                reason = "bulkhead_full"
        if reason is None and c.limit is not None:
            permit = c.limit.try_acquire()
            if permit is None:
                if c.bulkhead is not None:
                    c.bulkhead.__exit__(None, None, None)
                reason = "concurrency_limited"
            v.lim = permit
        if reason is not None and breaker is not None:
            breaker.record(v.permit, now, 0.0, None)  # release the permit uncounted
        return reason

    def settle(self, v: _Visit, c: _CallRT, outcome: int, now: float) -> None:
        """An admitted attempt ended: tell its policies, innermost first."""
        if c.limit is not None:
            v.lim.release(dropped=outcome in (TIMEOUT, REJECTED))
        if c.bulkhead is not None:
            c.bulkhead.__exit__(None, None, None)
        if c.throttle is not None:
            accepted = c.throttle_accepts[outcome]
            if accepted is not None:
                c.throttle.record(accepted, now)
        if c.breaker is not None:
            c.breaker.record(v.permit, now, now - v.sent, c.breaker_failed[outcome])

    def answered(self, v: _Visit, outcome: int) -> None:
        """The attempt in flight of ``v``'s call ended with ``outcome``."""
        c = v.call
        now = self.now
        trace = c.trace
        if trace is not None:  # a traced client call: (end, duration, retry, slot)
            trace.extend((now, now - v.sent, v.tries > 1, c.slot))
        if c.guarded:
            if c.breaker_only:  # settle(), inlined for the commonest guard
                c.breaker.record(v.permit, now, now - v.sent, c.breaker_failed[outcome])
            else:
                self.settle(v, c, outcome, now)
        if outcome != OK:
            self.failed(v, outcome)
            return
        budget = c.budget
        if budget is not None:
            budget.on_success(now)
        if c.cache is not None or v.__class__ is _Request or v.st.drop:
            self.call_done(v, OK)
            return
        # call_done and advance, inlined for a plain success inside a visit
        c.outcomes[OK] += 1
        if v.i == v.ep.n:
            self.finish(v)
        else:
            self.advance(v)

    def failed(self, v: _Visit, outcome: int) -> None:
        """An attempt failed: retry it as the call's Retry plans, or end the call."""
        c = v.call
        retry = c.retry
        if retry is not None:
            now = self.now
            if c.retryable[outcome]:
                budget = c.budget
                if budget is not None:
                    budget.on_failure(now)
                tries = v.tries
                plan = retry.plan(tries, now, v.prev if tries > 1 else 0.0, c.exc[outcome])
                if plan.__class__ is not str:
                    if v.__class__ is not _Request and v.st.drop and now + plan >= v.deadline:
                        plan = "deadline"
                    else:
                        v.prev = plan
                        # An event even for a wait of 0: retries refused at once, one
                        # after the other, must not nest calls without bound.
                        heappush(self.heap, (now + plan, self.seq(), self.on_attempt, v))
                        return
                c.abandoned[plan] = c.abandoned.get(plan, 0) + 1
            elif outcome != REFUSED and c.budget is not None:
                c.budget.on_success(now)  # the dependency answered, with no retry wanted
        self.call_done(v, outcome)

    def call_done(self, v: _Visit, outcome: int) -> None:
        """``v``'s call ended with ``outcome``: move on to its next step (or fail)."""
        c = v.call
        c.outcomes[outcome] += 1
        if c.cache is not None and v.key is not None:
            key = v.key
            v.key = None
            waiters = c.loading.pop(key, [])
            if outcome == OK:
                c.cache.set(key, _cache_entry(self.now + c.ttl_s, self.now - v.t0))
            for w in waiters:
                w.call = c
                self.call_done(w, outcome)
        if v.__class__ is _Request:  # a client request ends (request_done, inlined)
            cls = v.cls
            now = self.now
            cls.done[outcome] += 1
            latency = now - v.born
            cls.lat.append(latency)
            if outcome == OK and latency <= cls.timeout:
                cls.good += 1
            cls.sum_end += now
            trace = cls.trace
            if trace is not None:
                trace.extend((now, latency, outcome, c.slot))
        elif outcome != OK and c.fail:
            v.failed = REJECTED if outcome >= REJECTED else ERROR
            self.finish(v)
        else:
            self.advance(v)

    def wheel_fire(self, wheel: _Wheel) -> None:
        """The oldest pending attempt of a call step may have timed out."""
        q = wheel.q
        now = self.now
        while q:
            child = q[0]
            if not child.live:
                q.popleft()
            elif child.expires <= now:
                q.popleft()
                child.live = False
                caller = child.caller
                if caller is None:  # a direct request times out
                    self.request_done(child, TIMEOUT)
                else:
                    self.answered(caller, TIMEOUT)
            else:
                heappush(self.heap, (child.expires, self.seq(), self.on_wheel, wheel))
                return
        wheel.armed = False

    # -- stations ------------------------------------------------------------------------

    def arrive(self, v: _Visit) -> None:
        """``v`` arrives at ``v.st``: it gets a server, waits, or is rejected."""
        st = v.st
        while st.busy < st.servers:
            now = self.now
            st.busy += 1
            st.started += 1
            st.sum_start += now
            ep = v.ep
            target = ep.st
            if target is not st:  # it took a pool connection: on to its station
                v.st = st = target
                continue
            work = ep.single
            if work is not None:
                s = work() * st.factor + st.extra
                heappush(self.heap, (now + s, self.seq(), self.on_finish, v))
            elif ep.first is not None:
                s = ep.first() * st.factor + st.extra
                v.i = 1
                heappush(self.heap, (now + s, self.seq(), self.on_advance, v))
            else:
                v.i = 0
                self.advance(v)
            return
        q = st.queue
        if len(q) >= st.qcap:
            st.rejected += 1
            self.reply(v, REJECTED)
            return
        now = self.now
        if not q:
            st.nonempty_since = now
        kind = st.timeout_kind
        if kind == _NO_TIMEOUT:
            v.expiry = _INF
        else:
            if kind == _FIXED:
                expiry = now + st.timeout_s
            else:
                expiry = st.nonempty_since + st.interval_s
                floor = now + st.target_s
                expiry = max(expiry, floor)
            v.expiry = expiry
            if expiry < st.scan_at:
                st.scan_at = expiry
                heappush(self.heap, (expiry, self.seq(), self.on_scan, st))
        v.enq = now
        q.append(v)

    def serve(self, st: _StationRT) -> None:
        """Servers are free and visits wait: start them, in the station's order."""
        q = st.queue
        now = self.now
        st.serving = True  # a visit finishing inside this loop leaves the serving to it
        shed: list[tuple[_Visit, int]] | None = None
        while q and st.busy < st.servers:
            if st.lifo or (st.adaptive and now - st.nonempty_since >= st.interval_s):
                v = q.pop()
            else:
                v = q.popleft()
            if v.expiry <= now:
                st.expired += 1
                st.shed_q += now - v.enq
                if shed is None:
                    shed = []
                shed.append((v, REJECTED))
                continue
            if st.drop and v.deadline <= now:
                st.dropped += 1
                st.shed_q += now - v.enq
                if shed is None:
                    shed = []
                shed.append((v, ERROR))
                continue
            st.waits.append(now - v.enq)
            st.busy += 1
            st.started += 1
            st.sum_start += now
            ep = v.ep
            if ep.st is not st:  # a pool connection: on to its station
                v.st = ep.st
                self.arrive(v)
                continue
            work = ep.single
            if work is not None:
                s = work() * st.factor + st.extra
                heappush(self.heap, (now + s, self.seq(), self.on_finish, v))
            elif ep.first is not None:
                s = ep.first() * st.factor + st.extra
                v.i = 1
                heappush(self.heap, (now + s, self.seq(), self.on_advance, v))
            else:
                v.i = 0
                self.advance(v)
        st.serving = False
        if shed is not None:
            for v, outcome in shed:
                if v.live:
                    self.reply(v, outcome)

    def release(self, st: _StationRT) -> None:
        """A pool connection comes back."""
        st.busy -= 1
        st.sum_end += self.now
        if st.queue and not st.serving:
            self.serve(st)

    def scan(self, st: _StationRT) -> None:
        """Reject the waiting visits whose queue time limit has come."""
        st.scan_at = _INF
        q = st.queue
        now = self.now
        shed: list[_Visit] = []
        while q and q[0].expiry <= now:
            shed.append(q.popleft())
        if shed:
            st.shed_q += math.fsum(now - v.enq for v in shed)
            st.expired += len(shed)
        if q:
            st.scan_at = q[0].expiry
            heappush(self.heap, (st.scan_at, self.seq(), self.on_scan, st))
        for v in shed:
            if v.live:
                self.reply(v, REJECTED)

    def advance(self, v: _Visit) -> None:
        """Run ``v``'s next step (a work step ended, a call ended, or it just started)."""
        st = v.st
        if st.drop and self.now >= v.deadline:
            st.dropped_running += 1
            v.failed = ERROR
            self.finish(v)
            return
        ep = v.ep
        i = v.i
        if i < ep.n:
            step = ep.steps[i]
            v.i = i + 1
            if step.__class__ is _CallRT:
                if step.cache is None:  # call_start(), inlined without the cache look-up
                    v.call = step
                    v.tries = 0
                    budget = step.budget
                    if budget is not None:
                        budget.on_request(self.now)
                    self.attempt(v)
                else:
                    self.call_start(v, step)
            else:
                s = step() * st.factor + st.extra
                heappush(self.heap, (self.now + s, self.seq(), self.on_advance, v))
            return
        self.finish(v)

    def finish(self, v: _Visit) -> None:
        """``v`` is done at its station: free the server (and its pool connection), then
        answer its caller."""
        st = v.st
        now = self.now
        outcome = v.failed
        if outcome == OK:
            rate = v.ep.error_rate
            if rate and st.rand() < rate:
                outcome = st.err
        q = st.queue
        if (
            q
            and st.simple
            and not st.serving
            and st.busy <= st.servers  # not above a fault's lowered server count
            and q[0].ep.single is not None
            and q[0].ep.st is st
        ):
            # serve(), inlined for a plain FIFO queue whose oldest visit does one step. The
            # freed server goes straight to it: the busy count and the area sums (one exit
            # and one entry at the same time) are unchanged.
            w = q.popleft()
            st.waits.append(now - w.enq)
            st.started += 1
            s = w.ep.single() * st.factor + st.extra  # type: ignore[misc]
            heappush(self.heap, (now + s, self.seq(), self.on_finish, w))
        else:
            st.busy -= 1
            st.sum_end += now
            if q and not st.serving:
                self.serve(st)
        pool = v.pool
        if pool is not None:  # release(), inlined
            pool.busy -= 1
            pool.sum_end += now
            if pool.queue and not pool.serving:
                self.serve(pool)
        if v.live:
            v.live = False
            caller = v.caller
            if caller is not None:
                self.answered(caller, outcome)
                return
            cls = v.cls  # a direct request ends (request_done, inlined: the hot path; one
            cls.done[outcome] += 1  # attempt: an OK came within the timeout, so is goodput)
            cls.lat.append(now - v.born)
            cls.sum_end += now
            trace = cls.trace
            if trace is not None:
                trace.extend((now, now - v.born, outcome, 0.0))

    # -- time-driven bookkeeping ---------------------------------------------------------

    def tick(self, _: object) -> None:
        """Record the cumulative counts at an interval boundary (the timeline)."""
        counts = [0] * 10
        for cls in self.classes:
            done = cls.done
            counts[0] += cls.offered
            counts[1] += done[OK]
            counts[2] += cls.goodput
            counts[3] += done[ERROR]
            counts[4] += done[TIMEOUT]
            counts[5] += done[REJECTED]
            counts[6] += done[REFUSED]
            if cls.direct is not None:
                counts[7] += cls.offered
            else:
                for c in cls.calls:
                    counts[7] += c.attempts
                    counts[8] += c.retries
            counts[9] += cls.in_system
        stations = tuple((st.busy, len(st.queue)) for st in self.stations)
        offered = tuple(cls.offered for cls in self.classes)
        self.ticks.append((self.now, tuple(counts), stations, offered))
        if self.now < self.end:
            self.ticks_done += 1  # the next boundary, as a multiple (no drift from sums)
            self.at(min((self.ticks_done + 1) * self.interval_s, self.end), self.tick, None)

    def reset_stats(self, _: object) -> None:
        """The warm-up is over: count from now on."""
        now = self.now
        self.clip = now
        for cls in self.classes:
            cls.reset(now)
        for st in self.stations:
            st.reset(now)
        for c in self.calls:
            c.reset()

    def set_fault(self, change: tuple[_StationRT, float, float, int, float, int]) -> None:
        """Apply a fault's settings to a station (``servers`` < 0: unchanged): the latency
        factor, the error rate, the servers, the latency added to each work step and the
        outcome of an error draw."""
        st, factor, error_rate, servers, extra, err = change
        st.factor = factor
        st.extra = extra
        st.err = err
        for ep in st.endpoints:
            ep.error_rate = max(ep.base_error_rate, error_rate)
        if servers >= 0:
            if servers == 0:
                raise InvalidConfig("Fault", "servers", servers, "an integer >= 1")
            st.servers = servers
            if st.queue and st.busy < st.servers and not st.serving:
                self.serve(st)


def _stop(_: object) -> None:
    raise _Stop


def _cache_entry(expires_at: float, load_s: float) -> Any:
    from ..guard._cache import CacheEntry

    return CacheEntry(True, expires_at=expires_at, load_s=load_s)
