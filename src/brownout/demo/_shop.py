"""The demo shop: one business, two builds of the same logic.

``naive`` is written the way services are when nobody has measured them; each flaw is one
the seed names and the probe should find:

- ``GET /products``: a page of 20 products, then their reviews one query per product (N+1);
- ``GET /products/{id}``: the stock level from a synchronous "inventory SDK" call
  (``time.sleep``) inside the async handler: the whole event loop waits;
- ``GET /products/{id}/recommendations``: recomputed on every request, trigram similarity
  against every product of the category (CPU on the event loop, and the same queries again);
- ``GET /search?q=``: a ``LIKE '%q%'`` scan without a limit, ranked in Python;
- ``POST /checkout``: the order's transaction stays open (holding a pool connection) while
  it calls the payments service with no timeout and up to three immediate retries. When
  payments slows down, checkouts pile up on the pool, and then every page that needs the
  database waits for a connection: a local slowdown becomes an outage.

``guarded`` applies what the probe suggests and brownout's policies: the reviews in one
``IN`` query; the inventory call in a worker thread, cached for a few seconds; the
recommendations behind a single-flight ``Cache`` and the ``Dimmer`` (optional work, shed
first); search limited and cached; checkout in two short transactions around a payments
call guarded by a ``Pipeline`` (fallback "accepted, payment pending", total and attempt
timeouts, a retry with a 10 % budget, a circuit breaker, a bulkhead); and in front of it all
``GuardMiddleware`` with criticality per route (checkout critical, browsing default,
recommendations sheddable) and the ``TrafficShield`` (people and bots get separate budgets).

``create_shop(...)`` returns an ASGI app (Starlette) whose lifespan seeds the catalogue and
opens the database engine and the payments client.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from .._clock import monotonic_clock
from ..errors import InvalidConfig
from . import _catalogue as cat

__all__ = ["VARIANTS", "create_shop", "database_url"]

VARIANTS = ("naive", "guarded")
PAGE_SIZE = 20
INVENTORY_CALL_S = 0.025  # what the synchronous inventory SDK takes per call (a slow one)
PAYMENTS_PATH = "/charge"


def database_url(db: str | None, default_path: str) -> str:
    """The SQLAlchemy async URL: SQLite (aiosqlite) at ``default_path`` when ``db`` is None;
    ``postgresql://...`` becomes ``postgresql+asyncpg://...``."""
    if db is None:
        return f"sqlite+aiosqlite:///{default_path}"
    if db.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + db.split("://", 1)[1]
    if db.startswith(("sqlite://", "sqlite+aiosqlite://", "postgresql+asyncpg://")):
        return (
            db.replace("sqlite://", "sqlite+aiosqlite://", 1) if db.startswith("sqlite://") else db
        )
    raise InvalidConfig(
        "demo", "db", db, "a postgresql://user@host:port/database or sqlite:///path URL"
    )


def _trigrams(text: str) -> frozenset[str]:
    t = f"  {text.lower()} "
    return frozenset(t[i : i + 3] for i in range(len(t) - 2))


def _similarity(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def _inventory_lookup(product_id: int) -> int:
    """The "inventory SDK": synchronous, a few milliseconds per call (a stand-in for a
    blocking HTTP or database client)."""
    time.sleep(INVENTORY_CALL_S)
    return (product_id * 7919) % 50


class PaymentFailed(Exception):
    """The payments service answered with an error status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"payments answered {status}")
        self.status = status


def create_shop(
    variant: str,
    *,
    db_url: str,
    payments_url: str,
    pool_size: int = 5,
    max_overflow: int = 5,
    n_products: int = 2000,
    seed: int = 7,
    payments_transport: Any = None,
    wrap: Callable[[Any], Any] | None = None,
) -> Any:
    """The shop as an ASGI app. ``variant``: ``"naive"`` or ``"guarded"``. ``db_url``: a
    SQLAlchemy async URL (see :func:`database_url`). ``payments_url``: where the payments
    service (or the proxy in front of it) listens. ``pool_size`` / ``max_overflow``: the
    database pool (small on purpose: the pool is the resource the naive checkout exhausts).
    ``payments_transport``: an httpx transport for tests. ``wrap(app)``: a last layer
    outside everything (the demo puts the probe there)."""
    if variant not in VARIANTS:
        raise InvalidConfig("demo", "variant", variant, "'naive' or 'guarded'")
    import httpx
    from sqlalchemy import bindparam, event, func, select
    from sqlalchemy.ext.asyncio import create_async_engine
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    guarded = variant == "guarded"
    md = cat.metadata()
    products, reviews, orders = cat.products(md), cat.reviews(md), cat.orders(md)
    state: dict[str, Any] = {}

    # -- policies (guarded only) ------------------------------------------------------------
    if guarded:
        from ..guard import (
            Bulkhead,
            Cache,
            CircuitBreaker,
            Dimmer,
            Fallback,
            Pipeline,
            Retry,
            RetryBudget,
            Timeout,
        )

        recommendations_cache = Cache(ttl_s=60.0, max_entries=5000, stale_s=30.0)
        inventory_cache = Cache(ttl_s=5.0, max_entries=5000)
        search_cache = Cache(ttl_s=30.0, max_entries=2000)
        dimmer = Dimmer(setpoint_s=0.15)
        payments_policy = Pipeline(
            [
                Fallback(lambda _outcome, *_a, **_k: "pending", fallback_statuses=range(500, 600)),
                Timeout(1.0),
                Retry(attempts=3, base_s=0.05, budget=RetryBudget.ratio(0.1)),
                CircuitBreaker(failure_rate=0.5, minimum_calls=10, window_size=20, open_s=2.0),
                Bulkhead(max_concurrent=16, max_queue=16, max_wait_s=0.05),
                Timeout(0.3),
            ]
        )
        state["dimmer"] = dimmer

    # -- lifespan -----------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        engine = create_async_engine(
            db_url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=30.0 if not guarded else 2.0,
        )
        if engine.dialect.name == "sqlite":

            @event.listens_for(engine.sync_engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=5000")
                cur.close()

        await cat.seed(engine, md, seed=seed, n_products=n_products)
        timeout = httpx.Timeout(0.3) if guarded else None  # naive: no timeout at all
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        client = httpx.AsyncClient(
            base_url=payments_url, timeout=timeout, limits=limits, transport=payments_transport
        )
        state.update(engine=engine, client=client)
        try:
            yield
        finally:
            await client.aclose()
            await engine.dispose()

    # -- shared reads -------------------------------------------------------------------------
    review_cols = (reviews.c.product_id, reviews.c.rating, reviews.c.body)
    by_product_in = select(*review_cols).where(
        reviews.c.product_id.in_(bindparam("ids", expanding=True))
    )

    def product_dict(row: Any) -> dict[str, Any]:
        return {
            "id": row.id,
            "name": row.name,
            "category": row.category,
            "price_cents": row.price_cents,
        }

    async def reviews_of(conn: Any, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
        out: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
        if guarded:
            rows = (await conn.execute(by_product_in, {"ids": ids})).all()
        else:  # one query per product: the N+1
            rows = []
            for pid in ids:
                q = select(*review_cols).where(reviews.c.product_id == pid)
                rows.extend((await conn.execute(q)).all())
        for r in rows:
            out[r.product_id].append({"rating": r.rating, "body": r.body})
        return out

    def page_args(request: Request) -> tuple[str | None, int]:
        category = request.query_params.get("category")
        if category is not None and category not in cat.CATEGORIES:
            raise _BadRequest(f"category: one of {', '.join(cat.CATEGORIES)}")
        raw = request.query_params.get("page", "1")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise _BadRequest("page: an integer from 1 to 1000")
        return category, int(raw)

    def product_id(request: Request) -> int:
        raw = request.path_params["product_id"]
        if not 1 <= raw <= 10_000_000:
            raise _BadRequest("product_id: an integer from 1")
        return int(raw)

    # -- endpoints ----------------------------------------------------------------------------
    async def list_products(request: Request) -> Response:
        category, page = page_args(request)
        q = select(products).order_by(products.c.id).limit(PAGE_SIZE)
        q = q.offset((page - 1) * PAGE_SIZE)
        if category is not None:
            q = q.where(products.c.category == category)
        async with state["engine"].connect() as conn:
            rows = (await conn.execute(q)).all()
            revs = await reviews_of(conn, [r.id for r in rows])
        items = [{**product_dict(r), "reviews": revs[r.id]} for r in rows]
        return JSONResponse({"page": page, "items": items})

    async def show_product(request: Request) -> Response:
        pid = product_id(request)
        async with state["engine"].connect() as conn:
            row = (await conn.execute(select(products).where(products.c.id == pid))).first()
            if row is None:
                return JSONResponse({"error": "no such product"}, status_code=404)
            revs = await reviews_of(conn, [pid])
        if guarded:
            stock = await inventory_cache.aget_or_load(
                f"stock:{pid}", lambda: asyncio.to_thread(_inventory_lookup, pid)
            )
        else:
            stock = _inventory_lookup(pid)  # blocks the event loop
        body = {**product_dict(row), "description": row.description, "reviews": revs[pid]}
        body["in_stock"] = stock
        return JSONResponse(body)

    async def compute_recommendations(pid: int) -> list[dict[str, Any]] | None:
        async with state["engine"].connect() as conn:
            row = (await conn.execute(select(products).where(products.c.id == pid))).first()
            if row is None:
                return None
            same = (
                await conn.execute(select(products).where(products.c.category == row.category))
            ).all()
            averages = await conn.execute(
                select(reviews.c.product_id, func.avg(reviews.c.rating)).group_by(
                    reviews.c.product_id
                )
            )
            # float(): PostgreSQL's avg() is a NUMERIC (a Decimal), SQLite's a float.
            ratings = {pid: float(avg) for pid, avg in averages.all()}
        mine = _trigrams(row.description)
        scored = []
        for other in same:
            if other.id == pid:
                continue
            score = _similarity(mine, _trigrams(other.description))
            score *= 0.5 + (ratings.get(other.id) or 3.0) / 10.0
            scored.append((score, other.id, other))
        scored.sort(key=lambda item: (-item[0], item[1]))
        return [{**product_dict(o), "score": round(s, 4)} for s, _, o in scored[:8]]

    async def recommendations(request: Request) -> Response:
        pid = product_id(request)
        if guarded:
            if not state["dimmer"].serve_optional("recommendations"):
                return JSONResponse({"items": [], "dimmed": True})
            items = await recommendations_cache.aget_or_load(
                f"rec:{pid}", lambda: compute_recommendations(pid)
            )
        else:
            items = await compute_recommendations(pid)
        if items is None:
            return JSONResponse({"error": "no such product"}, status_code=404)
        return JSONResponse({"items": items})

    async def run_search(term: str) -> list[dict[str, Any]]:
        q = select(products).where(products.c.description.like(f"%{term}%"))
        if guarded:
            q = q.order_by(products.c.id).limit(200)
        async with state["engine"].connect() as conn:
            rows = (await conn.execute(q)).all()
        words = term.lower().split()
        ranked = sorted(
            rows, key=lambda r: (-sum(r.description.lower().count(w) for w in words), r.id)
        )
        return [product_dict(r) for r in ranked[:PAGE_SIZE]]

    async def search(request: Request) -> Response:
        term = request.query_params.get("q", "").strip()
        if not term or len(term) > 64:
            raise _BadRequest("q: 1 to 64 characters")
        if guarded:
            items = await search_cache.aget_or_load(f"q:{term.lower()}", lambda: run_search(term))
        else:
            items = await run_search(term)
        return JSONResponse({"q": term, "items": items})

    async def charge(order_id: int, amount_cents: int) -> Any:
        r = await state["client"].post(
            PAYMENTS_PATH, json={"order_id": order_id, "amount_cents": amount_cents}
        )
        if r.status_code >= 500:
            raise PaymentFailed(r.status_code)
        return r

    async def checkout(request: Request) -> Response:
        try:
            payload = await request.json()
            pid = int(payload["product_id"])
            quantity = int(payload.get("quantity", 1))
        except (ValueError, TypeError, KeyError):
            raise _BadRequest("body: JSON with product_id (integer) and quantity (1..10)") from None
        if not 1 <= quantity <= 10:
            raise _BadRequest("quantity: an integer from 1 to 10")
        engine = state["engine"]
        price_q = select(products.c.price_cents).where(products.c.id == pid)
        if not guarded:
            # The transaction, and its pooled connection, stay open across the payment call.
            async with engine.begin() as conn:
                price = (await conn.execute(price_q)).scalar()
                if price is None:
                    return JSONResponse({"error": "no such product"}, status_code=404)
                res = await conn.execute(
                    orders.insert().values(
                        product_id=pid, quantity=quantity, status="new", created_s=time.time()
                    )
                )
                order_id = res.inserted_primary_key[0]
                status = "failed"
                for _ in range(4):  # immediate retries, no backoff, no budget
                    try:
                        await charge(order_id, price * quantity)
                    except (PaymentFailed, httpx.TransportError):
                        continue
                    status = "paid"
                    break
                await conn.execute(
                    orders.update().where(orders.c.id == order_id).values(status=status)
                )
            code = 200 if status == "paid" else 502
            return JSONResponse({"order_id": order_id, "status": status}, status_code=code)
        async with engine.begin() as conn:
            price = (await conn.execute(price_q)).scalar()
            if price is None:
                return JSONResponse({"error": "no such product"}, status_code=404)
            res = await conn.execute(
                orders.insert().values(
                    product_id=pid, quantity=quantity, status="new", created_s=time.time()
                )
            )
            order_id = res.inserted_primary_key[0]
        outcome = await payments_policy.acall(charge, order_id, price * quantity)
        status = "pending" if outcome == "pending" else "paid"
        async with engine.begin() as conn:
            await conn.execute(orders.update().where(orders.c.id == order_id).values(status=status))
        return JSONResponse({"order_id": order_id, "status": status})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True, "variant": variant})

    def handle(fn: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                return await fn(request)  # type: ignore[no-any-return]
            except _BadRequest as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)

        endpoint.__name__ = fn.__name__
        return endpoint

    routes = [
        Route("/healthz", healthz),
        Route("/products", handle(list_products)),
        Route("/products/{product_id:int}", handle(show_product)),
        Route("/products/{product_id:int}/recommendations", handle(recommendations)),
        Route("/search", handle(search)),
        Route("/checkout", handle(checkout), methods=["POST"]),
    ]
    app: Any = Starlette(routes=routes, lifespan=lifespan)
    if guarded:
        app = _guard(app, state["dimmer"])
    return wrap(app) if wrap is not None else app


class _BadRequest(Exception):
    """A request the shop refuses with 400 and a one-line reason naming the field."""


def _guard(app: Any, dimmer: Any) -> Any:
    """The front door of the guarded shop."""
    from ..asgi import GuardMiddleware, RouteConfig, TrafficShield
    from ..guard import Criticality, RateLimit

    # The demo's load generator plays the load balancer: it is on loopback and says who
    # each client is in X-Forwarded-For (its scenario gives people thousands of addresses
    # and the scraper a handful).
    shield = TrafficShield(
        trusted_proxies=["127.0.0.0/8", "::1"],
        per_client=RateLimit(rate=20, burst=40, name="per-client"),
        per_class={
            "human": RateLimit(rate=5000, burst=1000, name="people"),
            "bot": RateLimit(rate=30, burst=30, name="bots"),
        },
        expensive_paths=["/search*", "/products/*/recommendations"],
    )
    return GuardMiddleware(
        app,
        shield=shield,
        routes={
            "/healthz": RouteConfig(bypass=True),
            "/checkout": RouteConfig(criticality=Criticality.CRITICAL),
            "/products/*/recommendations": RouteConfig(criticality=Criticality.SHEDDABLE),
        },
        dimmer=dimmer,
        clock=monotonic_clock,
    )
