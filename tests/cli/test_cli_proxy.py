"""``brownout proxy``: flags, ready lines, the API it serves, clean stops, one-line errors."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from brownout.cli import main
from brownout.faults._client import ProxyClient


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("brownout: error: ")
    for needle in needles:
        assert needle in err, (needle, err)
    return err


# -- bad flags: exit 2 with one line naming the flag ----------------------------------------


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--listen", "127.0.0.1:0"], "--upstream"),
        (["--name", "a", "--name", "b", "--listen", "x:1", "--upstream", "y:2"], "--name"),
        (["--listen", "nonsense", "--upstream", "127.0.0.1:9"], "--listen"),
        (["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:0"], "--upstream"),
        (["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:99999"], "--upstream"),
        (["--api", "8474"], "--api"),
        (["--api", "0.0.0.0:8474"], "--allow-remote-api"),
        (["--api", "192.0.2.1:0"], "--allow-remote-api"),
        (
            ["--name", "a", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9"] * 2,
            "--name",
        ),
        (["--config", "/nonexistent/proxies.json"], "--config"),
        (["--seed", "many"], "--seed"),
        (["--bogus"], "--bogus"),
    ],
)
def test_bad_flags_exit_2_with_one_line_naming_the_flag(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["proxy", *argv]) == 2
    _one_line_error(capsys, flag)


@pytest.mark.parametrize(
    "content",
    ["{not json", '{"name": "a"}', "", "\xff"],
)
def test_a_bad_config_file_exits_2_naming_it(
    content: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "proxies.json"
    path.write_text(content, encoding="latin-1")
    assert main(["proxy", "--config", str(path)]) == 2
    _one_line_error(capsys, "--config")


def test_help_explains_the_remote_api_guard(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["proxy", "--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--allow-remote-api" in out
    assert "loopback" in out
    assert "proxy NAME on HOST:PORT -> UPSTREAM" in out


# -- the real process -----------------------------------------------------------------------


@pytest.fixture
def needs_hub() -> None:
    pytest.importorskip("brownout.faults._proxy")


class Proc:
    """``python -m brownout proxy ARGS``; reads its stdout lines with a deadline."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "brownout", "proxy", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.pending = b""

    def lines(self, count: int, timeout_s: float = 15.0) -> list[str]:
        """The first ``count`` lines on stdout (fewer if it ends first)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while self.pending.count(b"\n") < count and time.monotonic() < deadline:
                if not sel.select(max(deadline - time.monotonic(), 0.0)):
                    break
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self.pending += chunk
        *done, self.pending = self.pending.split(b"\n")
        return [line.decode() for line in done[:count]]

    def stop(self, signum: int = signal.SIGINT, timeout_s: float = 5.0) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout=timeout_s)
        return code, time.monotonic() - started

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@contextlib.contextmanager
def running(*args: str) -> Iterator[Proc]:
    proc = Proc(*args)
    try:
        yield proc
    finally:
        proc.close()


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


@pytest.mark.usefixtures("needs_hub")
def test_proxies_start_print_ready_lines_serve_the_api_and_stop_on_sigint(tmp_path: Path) -> None:
    config = tmp_path / "proxies.json"
    config.write_text(
        json.dumps([{"name": "search", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9002"}])
    )
    with socket.create_server(("127.0.0.1", 0)) as upstream:
        up = f"127.0.0.1:{upstream.getsockname()[1]}"
        argv = ["--name", "payments", "--listen", "127.0.0.1:0", "--upstream", up]
        argv += ["--name", "users", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9001"]
        with running(*argv, "--config", str(config), "--api", "127.0.0.1:0", "--quiet") as proc:
            lines = proc.lines(4)
            assert len(lines) == 4, (lines, proc.proc.poll())
            names = [line.split()[1] for line in lines[:3]]
            assert names == ["payments", "users", "search"]
            for line, target in zip(
                lines[:3], [up, "127.0.0.1:9001", "127.0.0.1:9002"], strict=True
            ):
                word, _, on, address, arrow, upstream_text = line.split()
                assert (word, on, arrow, upstream_text) == ("proxy", "on", "->", target)
                assert address.startswith("127.0.0.1:")
                assert _port(address) > 0
            assert lines[3].startswith("api on http://127.0.0.1:")
            api_url = lines[3].removeprefix("api on ")
            assert _port(api_url) > 0

            with ProxyClient(api_url) as client:
                proxies = client.proxies()
                assert set(proxies) == {"payments", "users", "search"}
                assert proxies["payments"]["listen"] == lines[0].split()[3]
                client.add_toxic("payments", {"type": "latency", "attributes": {"latency": 5}})
                assert client.toxics("payments")[0]["type"] == "latency"

            code, took = proc.stop(signal.SIGINT)
            assert proc.proc.stderr is not None
            err = proc.proc.stderr.read()
    assert code == 0
    assert took < 5
    assert err == b""  # --quiet: the ready lines only


@pytest.mark.usefixtures("needs_hub")
def test_the_proxy_it_starts_forwards_to_the_upstream() -> None:
    """Under the loop the command really runs (uvloop when installed)."""
    with socket.create_server(("127.0.0.1", 0)) as upstream:
        upstream.settimeout(5)
        up = f"127.0.0.1:{upstream.getsockname()[1]}"
        with running("--listen", "127.0.0.1:0", "--upstream", up, "--api", "127.0.0.1:0") as proc:
            lines = proc.lines(2)
            assert len(lines) == 2, lines
            with socket.create_connection(
                ("127.0.0.1", _port(lines[0].split()[3])), timeout=5
            ) as c:
                conn, _ = upstream.accept()
                with conn:
                    c.sendall(b"ping")
                    conn.settimeout(5)
                    assert conn.recv(4) == b"ping"
                    conn.sendall(b"pong")
                    assert c.recv(4) == b"pong"
            code, _ = proc.stop(signal.SIGINT)
    assert code == 0


@pytest.mark.usefixtures("needs_hub")
def test_with_no_proxy_it_serves_the_api_and_stops_on_sigterm() -> None:
    with running("--api", "127.0.0.1:0") as proc:
        [line] = proc.lines(1)
        assert line.startswith("api on http://127.0.0.1:")
        with ProxyClient(line.removeprefix("api on ")) as client:
            assert client.proxies() == {}
            made = client.create("late", "127.0.0.1:0", "127.0.0.1:9")
            assert made["name"] == "late"
        code, took = proc.stop(signal.SIGTERM)
        assert proc.proc.stderr is not None
        err = proc.proc.stderr.read().decode()
    assert code == 0
    assert took < 5
    assert "Traceback" not in err
    assert "api POST /proxies 201" in err  # the request log (not --quiet)


@pytest.mark.usefixtures("needs_hub")
def test_a_single_unnamed_proxy_is_called_proxy() -> None:
    with running(
        "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--api", "127.0.0.1:0"
    ) as proc:
        lines = proc.lines(2)
        assert lines[0].startswith("proxy proxy on 127.0.0.1:")
        code, _ = proc.stop()
    assert code == 0


@pytest.mark.usefixtures("needs_hub")
@pytest.mark.parametrize("which", ["--listen", "--api"])
def test_a_taken_port_exits_2_with_one_line(which: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as blocker:
        taken = f"127.0.0.1:{blocker.getsockname()[1]}"
        listen = taken if which == "--listen" else "127.0.0.1:0"
        api = taken if which == "--api" else "127.0.0.1:0"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "brownout",
                "proxy",
                "--listen",
                listen,
                "--upstream",
                "127.0.0.1:9",
                "--api",
                api,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("brownout: error: ")
    assert which in done.stderr
    assert taken in done.stderr
    assert "api on" not in done.stdout  # never said it was ready


@pytest.mark.usefixtures("needs_hub")
def test_a_config_entry_with_a_bad_field_exits_2_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "proxies.json"
    config.write_text(json.dumps([{"name": "a", "listen": "127.0.0.1:0"}]))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "brownout",
            "proxy",
            "--config",
            str(config),
            "--api",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "proxies[0].upstream" in done.stderr
