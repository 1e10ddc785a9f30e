"""``brownout profile APP``: a real app under uvicorn with the probe, driven, reported."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from brownout.cli import main

APP = textwrap.dedent(
    """
    import sqlite3, time
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    DB = "items.db"
    con = sqlite3.connect(DB)
    con.execute("create table if not exists t(id integer primary key, v text)")
    con.executemany("insert or replace into t values (?, ?)", [(i, f"v{i}") for i in range(40)])
    con.commit()
    con.close()

    async def items(request):
        con = sqlite3.connect(DB)
        out = [con.execute("select v from t where id = ?", (i,)).fetchone()[0] for i in range(25)]
        con.close()
        return JSONResponse(out)

    async def slow(request):
        time.sleep(0.03)  # a synchronous call in an async handler
        return JSONResponse({"ok": True})

    async def item(request):
        return JSONResponse({"id": request.path_params["id"]})

    app = Starlette(routes=[
        Route("/items", items), Route("/slow", slow), Route("/items/{id:int}", item),
    ])
    """
)

pytestmark = pytest.mark.slow


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "shopapp.py").write_text(APP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("shopapp", None)


def test_profile_finds_the_n_plus_one_and_the_blocking_call(
    app_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = app_dir / "ledger.json"
    code = main(["profile", "shopapp:app", "--rate", "15", "--duration", "2s", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    ledger = json.loads(out.read_text())
    # Every GET route was discovered and driven, path parameters filled with 1.
    assert set(ledger["endpoints"]) >= {"GET /items", "GET /slow", "GET /items/{id}"}
    kinds = {(f["kind"], f["endpoint"]) for f in ledger["findings"]}
    assert ("n_plus_one_db", "GET /items") in kinds
    assert ("loop_blocking", "GET /slow") in kinds
    assert "n_plus_one_db" in text
    assert "GET /items" in text
    items = ledger["endpoints"]["GET /items"]["demands"]["db_calls"]
    assert items["mean"] == pytest.approx(25.0)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["profile", "shopapp"], "module:attribute"),
        (["profile", "nosuchmodule:app"], "cannot import"),
        (["profile", "shopapp:nothing"], "has no"),
        (["profile", "shopapp:app", "--rate", "0"], "--rate"),
        (["profile", "shopapp:app", "--duration", "soon"], "--duration"),
        (["profile", "shopapp:app", "--paths", "items"], "--paths"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    app_dir: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert needle in err
