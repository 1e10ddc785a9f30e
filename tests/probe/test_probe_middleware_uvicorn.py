"""ProbeMiddleware under a real uvicorn on loopback: a FastAPI app with an N+1 over SQLite,
driven over TCP, its ledger read from the live loopback endpoint and from the file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from brownout.probe import Ledger, ProbeMiddleware, ProbeThresholds, install

uvicorn = pytest.importorskip("uvicorn")
fastapi = pytest.importorskip("fastapi")

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


def test_fastapi_app_under_uvicorn(tmp_path: Path) -> None:
    path = str(tmp_path / "shop.db")
    conn = sqlite3.connect(path)
    conn.execute("create table orders(id integer primary key, customer int)")
    conn.execute("create table customers(id integer primary key, name text)")
    conn.executemany("insert into customers values (?, ?)", [(i, f"c{i}") for i in range(8)])
    conn.executemany("insert into orders values (?, ?)", [(i, i % 8) for i in range(8)])
    conn.commit()
    conn.close()

    api = fastapi.FastAPI()

    @api.get("/orders/{order_id}")
    async def order(order_id: int) -> dict[str, Any]:
        db = sqlite3.connect(path)
        row = db.execute("select customer from orders where id = ?", (order_id,)).fetchone()
        db.close()
        return {"id": order_id, "customer": row[0]}

    @api.get("/orders")
    async def orders() -> list[dict[str, Any]]:
        db = sqlite3.connect(path)
        out = []
        for oid, customer in db.execute("select id, customer from orders").fetchall():
            (name,) = db.execute("select name from customers where id = ?", (customer,)).fetchone()
            out.append({"id": oid, "customer": name})
        db.close()
        return out

    probe = install(
        thresholds=ProbeThresholds(n_plus_one_min_total_s=0.0),
        http=False,
        asyncpg=False,
        psycopg=False,
    )
    app = ProbeMiddleware(api, probe=probe, ledger_path="/_brownout/ledger")

    async def main() -> dict[str, Any]:
        async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
            for i in range(3):
                assert (await client.get(f"/orders/{i}")).status_code == 200
            assert len((await client.get("/orders")).json()) == 8
            live = await client.get("/_brownout/ledger")
            assert live.status_code == 200
            return dict(live.json())

    try:
        doc = asyncio.run(main())
    finally:
        probe.uninstall()
    assert doc["endpoints"]["GET /orders/{order_id}"]["requests"] == 3
    assert doc["endpoints"]["GET /orders"]["demands"]["db_calls"]["max"] == 9
    (finding,) = doc["findings"]
    assert (finding["kind"], finding["endpoint"]) == ("n_plus_one_db", "GET /orders")
    out = tmp_path / "ledger.json"
    probe.write(out)
    again = Ledger.from_dict(json.loads(out.read_text()), source=str(out))
    assert again.endpoints["GET /orders"].demand("db_calls").total == 9
