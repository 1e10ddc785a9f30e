"""Load a page in headless Chromium and report what happened, over the DevTools protocol.

Chromium is started with ``--remote-debugging-pipe``: it reads protocol messages on file
descriptor 3 and writes them on 4, each a JSON object ended by a NUL byte. No port is
opened, no third-party client is needed, and every console message, uncaught exception,
browser log entry and network request of the page arrives as an event, which is more
reliable than parsing ``--enable-logging`` output. One browser process per call; it is
killed on every exit path.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageRun:
    """What loading the page produced."""

    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    screenshot: bytes = b""
    elapsed_s: float = 0.0


class _Pipe:
    def __init__(self, write_fd: int, read_fd: int, deadline: float) -> None:
        self.w = write_fd
        self.r = read_fd
        self.deadline = deadline
        self.buf = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> int:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        return self.next_id

    def _read_some(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("headless chromium did not answer in time")
        ready, _, _ = select.select([self.r], [], [], left)
        if not ready:
            raise TimeoutError("headless chromium did not answer in time")
        chunk = os.read(self.r, 1 << 20)
        if not chunk:
            raise RuntimeError("headless chromium closed the DevTools pipe")
        self.buf += chunk

    def _drain(self) -> list[dict[str, Any]]:
        out = []
        while b"\0" in self.buf:
            raw, self.buf = self.buf.split(b"\0", 1)
            out.append(json.loads(raw))
        return out

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        want = self.send(method, params, session)
        while True:
            for msg in self._drain():
                if msg.get("id") == want:
                    if "error" in msg:
                        raise RuntimeError(f"{method}: {msg['error']}")
                    return dict(msg.get("result", {}))
                self.events.append(msg)
            self._read_some()

    def wait_event(self, method: str) -> dict[str, Any]:
        while True:
            for i, msg in enumerate(self.events):
                if msg.get("method") == method:
                    return self.events.pop(i)
            self.events.extend(self._drain())
            if any(m.get("method") == method for m in self.events):
                continue
            self._read_some()


def _child_fds(read_end: int, write_end: int) -> None:
    # Runs in the child between fork and exec: put the pipe ends on 3 and 4, inheritable
    # (dup gives fresh numbers first, so the two dup2 calls cannot clobber each other).
    a, b = os.dup(read_end), os.dup(write_end)
    os.dup2(a, 3)
    os.dup2(b, 4)


def load_page(
    chromium: str,
    url: str,
    *,
    width: int = 1400,
    height: int = 2400,
    expressions: dict[str, str] | None = None,
    timeout_s: float = 30.0,
    clip: tuple[int, int] | None = None,
) -> PageRun:
    """Open ``url`` at ``width`` x ``height`` CSS pixels, wait for its load event, evaluate
    ``expressions`` (name -> JavaScript) and take a full-page PNG screenshot (or of the
    band ``clip = (top, height)`` of the page)."""
    started = time.monotonic()
    deadline = started + timeout_s
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    profile = tempfile.mkdtemp(prefix="brownout-chromium-")
    args = [
        chromium,
        "--headless",
        "--remote-debugging-pipe",
        "--no-sandbox",  # root in containers; the page is ours and local
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        "about:blank",
    ]
    proc = subprocess.Popen(
        args,
        preexec_fn=lambda: _child_fds(to_child_r, from_child_w),  # noqa: PLW1509 - fds 3/4 are the protocol
        close_fds=False,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(to_child_r)
    os.close(from_child_w)
    run = PageRun()
    try:
        pipe = _Pipe(to_child_w, from_child_r, deadline)
        target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Runtime", "Log", "Page", "Network"):
            pipe.call(f"{domain}.enable", session=session)
        pipe.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        pipe.call("Page.navigate", {"url": url}, session=session)
        while True:  # a late load event of about:blank must not count as the page's
            pipe.wait_event("Page.loadEventFired")
            where = pipe.call(
                "Runtime.evaluate",
                {"expression": "[location.href, document.readyState]", "returnByValue": True},
                session=session,
            )
            if where.get("result", {}).get("value") == [url, "complete"]:
                break
        for name, expr in (expressions or {}).items():
            result = pipe.call(
                "Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=session
            )
            run.values[name] = result.get("result", {}).get("value")
        metrics = pipe.call("Page.getLayoutMetrics", session=session)
        size = metrics.get("cssContentSize") or metrics.get("contentSize") or {}
        shot = pipe.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {
                    "x": 0,
                    "y": clip[0] if clip else 0,
                    "width": width,
                    "height": clip[1] if clip else max(height, int(size.get("height", height))),
                    "scale": 1,
                },
            },
            session=session,
        )
        run.screenshot = base64.b64decode(shot["data"])
        pipe.events.extend(pipe._drain())
        for msg in pipe.events:
            method, params = msg.get("method"), msg.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                run.console_errors.append(json.dumps(params.get("args"))[:500])
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                text = details.get("exception", {}).get("description") or details.get("text")
                run.exceptions.append(str(text)[:500])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                run.log_errors.append(str(params["entry"].get("text"))[:500])
            elif method == "Network.requestWillBeSent":
                run.requests.append(str(params.get("request", {}).get("url")))
        with contextlib.suppress(OSError):
            pipe.send("Browser.close")
    finally:
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        os.close(to_child_w)
        os.close(from_child_r)
        shutil.rmtree(profile, ignore_errors=True)
    run.elapsed_s = time.monotonic() - started
    return run


def save_artifact(name: str, data: bytes, root: Path) -> Path:
    """Write ``data`` under ``<root>/.artifacts/report/`` (gitignored) and return the path."""
    folder = root / ".artifacts" / "report"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path
