"""The demo shop: both builds serve the same business; only the naive one cascades."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from brownout.demo import create_payments, create_shop, database_url
from brownout.errors import InvalidConfig


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Run an ASGI app's lifespan (startup before, shutdown after)."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(app({"type": "lifespan"}, to_app.get, from_app.put))
    await to_app.put({"type": "lifespan.startup"})
    started = await asyncio.wait_for(from_app.get(), 20)
    assert started["type"] == "lifespan.startup.complete", started
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(from_app.get(), 20)
        await task


class Payments(httpx.AsyncBaseTransport):
    """The payments service in process, counting calls; ``status`` forces an answer,
    ``gate`` (an Event) holds every call until set."""

    def __init__(self, status: int | None = None, gate: asyncio.Event | None = None) -> None:
        self.inner = httpx.ASGITransport(app=create_payments(latency_s=0.0))
        self.status = status
        self.gate = gate
        self.calls = 0
        self.called = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.status is not None:
            return httpx.Response(self.status, json={"error": "down"})
        return await self.inner.handle_async_request(request)


def shop(
    variant: str, tmp_path: Path, payments: Payments, *, db: str | None = None, **kw: Any
) -> Any:
    url = database_url(db, str(tmp_path / f"{variant}.db"))
    return create_shop(
        variant,
        db_url=url,
        payments_url="http://payments",
        n_products=200,
        payments_transport=payments,
        **kw,
    )


@contextlib.asynccontextmanager
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with lifespan(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        headers = {"user-agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", "cookie": "sid=1"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://shop", headers=headers
        ) as c:
            yield c


READS = [
    "/products?page=2",
    "/products?category=toys",
    "/products/5",
    "/products/17/recommendations",
    "/search?q=kettle",
]


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest) -> str | None:
    """The shop's database: SQLite in the test's folder, or the PostgreSQL the machine runs
    (``--db URL`` in the demo; required in CI)."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("postgres_url"))


def test_both_builds_serve_the_same_answers(tmp_path: Path, db: str | None) -> None:
    async def main() -> None:
        answers: dict[str, list[Any]] = {}
        for variant in ("naive", "guarded"):
            async with client(shop(variant, tmp_path, Payments(), db=db)) as c:
                for path in READS:
                    r = await c.get(path)
                    assert r.status_code == 200, (variant, path, r.text)
                    answers.setdefault(path, []).append(r.json())
        for path, (naive, guarded) in answers.items():
            assert naive == guarded, path
        page = answers["/products?page=2"][0]["items"]
        assert len(page) == 20
        assert page[0]["id"] == 21
        assert any(item["reviews"] for item in page)
        assert all(i["category"] == "toys" for i in answers["/products?category=toys"][0]["items"])
        assert len(answers["/products/17/recommendations"][0]["items"]) == 8

    asyncio.run(main())


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("GET", "/products?page=0", None, "page"),
        ("GET", "/products?page=x", None, "page"),
        ("GET", "/products?category=cars", None, "category"),
        ("GET", "/search?q=", None, "q"),
        ("POST", "/checkout", "not json", "body"),
        ("POST", "/checkout", {"product_id": 3, "quantity": 50}, "quantity"),
    ],
)
def test_bad_requests_get_400_naming_the_field(
    tmp_path: Path, method: str, path: str, body: Any, field: str
) -> None:
    async def main() -> None:
        async with client(shop("naive", tmp_path, Payments())) as c:
            content = body if isinstance(body, str) or body is None else json.dumps(body)
            r = await c.request(method, path, content=content)
            assert r.status_code == 400
            assert r.json()["error"].startswith(f"{field}:")

    asyncio.run(main())


def test_checkout_pays_in_both_builds(tmp_path: Path) -> None:
    async def main() -> None:
        for variant in ("naive", "guarded"):
            payments = Payments()
            async with client(shop(variant, tmp_path, payments)) as c:
                r = await c.post("/checkout", json={"product_id": 3, "quantity": 2})
                assert (r.status_code, r.json()["status"]) == (200, "paid"), variant
                assert payments.calls == 1

    asyncio.run(main())


def test_failing_payments_naive_retries_at_once_guarded_accepts_the_order(tmp_path: Path) -> None:
    async def main() -> None:
        naive_payments = Payments(status=503)
        async with client(shop("naive", tmp_path, naive_payments)) as c:
            r = await c.post("/checkout", json={"product_id": 3})
            assert (r.status_code, r.json()["status"]) == (502, "failed")
        assert naive_payments.calls == 4  # 1 + 3 immediate retries
        guarded_payments = Payments(status=503)
        async with client(shop("guarded", tmp_path, guarded_payments)) as c:
            r = await c.post("/checkout", json={"product_id": 3})
            assert (r.status_code, r.json()["status"]) == (200, "pending")
        assert guarded_payments.calls <= 3

    asyncio.run(main())


@pytest.mark.parametrize(("variant", "starved"), [("naive", True), ("guarded", False)])
def test_a_hanging_payment_starves_the_pool_only_in_the_naive_build(
    tmp_path: Path, variant: str, starved: bool
) -> None:
    """One connection in the pool; a checkout whose payment hangs. The naive checkout keeps
    its transaction (the connection) open while it waits, so browsing cannot get one."""

    async def main() -> None:
        gate = asyncio.Event()
        payments = Payments(gate=gate)
        app = shop(variant, tmp_path, payments, pool_size=1, max_overflow=0)
        async with client(app) as c:
            pay = asyncio.create_task(c.post("/checkout", json={"product_id": 3}))
            await asyncio.wait_for(payments.called.wait(), 10)  # checkout waits on payments
            browse = asyncio.create_task(c.get("/products?page=1"))
            done, _ = await asyncio.wait({browse}, timeout=0.5)
            assert (browse not in done) is starved
            gate.set()
            assert (await browse).status_code == 200
            assert (await pay).status_code == 200

    asyncio.run(main())


def test_unknown_variant_and_database_url_are_refused() -> None:
    with pytest.raises(InvalidConfig, match="variant"):
        create_shop("fast", db_url="sqlite+aiosqlite:///x.db", payments_url="http://p")
    with pytest.raises(InvalidConfig, match="db"):
        database_url("mysql://x", "/tmp/x.db")
    assert database_url("postgresql://u@h:5432/d", "x").startswith("postgresql+asyncpg://")


def test_a_catalogue_of_another_size_is_replaced(tmp_path: Path, db: str | None) -> None:
    # The demo (2,000 products) and these tests (200) may share one PostgreSQL database:
    # each run must get the catalogue it asked for, and the same one twice.
    from sqlalchemy.ext.asyncio import create_async_engine

    from brownout.demo._catalogue import metadata, seed

    async def main() -> list[int]:
        engine = create_async_engine(database_url(db, str(tmp_path / "c.db")))
        md = metadata()
        try:
            return [await seed(engine, md, n_products=n) for n in (50, 50, 120, 50)]
        finally:
            await engine.dispose()

    assert asyncio.run(main()) == [50, 50, 120, 50]
