"""Headless Chromium driven over the DevTools protocol: load a page, wait in real time, screenshot.

Chromium's one-shot `--screenshot` runs on virtual time and returns while rerun's wasm viewer is
still compiling (it captures the loading page); navigating over DevTools and waiting in wall-clock
time lets the viewer start. Needs the `chromium` executable and the `websockets` package.
"""
from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Software WebGL2 through ANGLE/SwiftShader works with these; `--use-gl=swiftshader` breaks WebGL2.
HEADLESS_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-default-apps", "--mute-audio")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageCapture:
    png: bytes
    title: str
    text: str  # document.body.innerText
    canvases: list = field(default_factory=list)  # [{width, height}] of <canvas> elements
    console: list = field(default_factory=list)  # console messages / exceptions seen while loading
    values: dict = field(default_factory=dict)  # results of the `evaluate` expressions
    waited_s: float = 0.0  # real time from navigation to the screenshot


def capture(url: str, wait_s: float = 6.0, width: int = 1280, height: int = 800, timeout: float = 60.0,
            ready_js: str | None = None, settle_s: float = 0.0, evaluate: dict[str, str] | None = None,
            chromium: str | None = None) -> PageCapture:
    """Load `url` in headless Chromium, wait `wait_s` seconds of real time (or until the JS
    expression `ready_js` is truthy, at most `wait_s`, then `settle_s` more so the page can draw),
    then screenshot and read the page;
    `evaluate` maps names to JS expressions whose (JSON-able) values are returned in `values`."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise RuntimeError(f"no Chromium found (looked for {', '.join(CHROMIUM_NAMES)})")
    profile = tempfile.mkdtemp(prefix="embodied-chromium-")
    port = _free_port()
    proc = subprocess.Popen([chromium, *HEADLESS_FLAGS, f"--user-data-dir={profile}",
                             f"--window-size={width},{height}", f"--remote-debugging-port={port}",
                             "--remote-debugging-address=127.0.0.1", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ws_url = _page_websocket(port, proc, deadline=time.monotonic() + 20)
        return asyncio.run(asyncio.wait_for(_drive(ws_url, url, wait_s, width, height, ready_js, settle_s, evaluate or {}), timeout))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def _free_port() -> int:
    from embodied.viewer.serve import free_port

    return free_port()


def _page_websocket(port: int, proc: subprocess.Popen, deadline: float) -> str:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with code {proc.returncode} before DevTools answered")
        try:
            tabs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=1))
            pages = [t for t in tabs if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("chromium's DevTools endpoint did not answer within 20 s")


async def _drive(ws_url: str, url: str, wait_s: float, width: int, height: int, ready_js: str | None,
                 settle_s: float, expressions: dict[str, str]) -> PageCapture:
    import websockets

    console: list[str] = []
    async with websockets.connect(ws_url, max_size=2**28) as ws:
        counter = 0

        async def call(method: str, **params):
            nonlocal counter
            counter += 1
            my_id = counter
            await ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
            while True:
                message = json.loads(await ws.recv())
                if message.get("id") == my_id:
                    if "error" in message:
                        raise RuntimeError(f"DevTools {method}: {message['error'].get('message')}")
                    return message.get("result", {})
                if message.get("method") == "Runtime.consoleAPICalled":
                    args = message["params"].get("args", [])
                    console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
                elif message.get("method") == "Runtime.exceptionThrown":
                    console.append(message["params"]["exceptionDetails"].get("text", "exception"))

        async def evaluate(expression: str):
            result = await call("Runtime.evaluate", expression=expression, returnByValue=True)
            return result.get("result", {}).get("value")

        await call("Page.enable")
        await call("Runtime.enable")
        await call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        start = time.monotonic()
        await call("Page.navigate", url=url)
        while time.monotonic() - start < wait_s:
            # Evaluating keeps the protocol (and the page's event loop) busy in real time.
            if ready_js is not None and await evaluate(ready_js):
                break
            await asyncio.sleep(0.25)
        settle_until = time.monotonic() + settle_s
        while time.monotonic() < settle_until:
            await evaluate("1")
            await asyncio.sleep(0.25)
        waited = time.monotonic() - start
        shot = await call("Page.captureScreenshot", format="png")
        values = {name: await evaluate(expression) for name, expression in expressions.items()}
        title = await evaluate("document.title") or ""
        text = await evaluate("document.body ? document.body.innerText : ''") or ""
        canvases = await evaluate("Array.from(document.querySelectorAll('canvas'))"
                                  ".map(c => ({width: c.width, height: c.height}))") or []
    return PageCapture(png=base64.b64decode(shot["data"]), title=title, text=text, canvases=canvases, console=console,
                       values=values, waited_s=waited)
