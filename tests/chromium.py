"""A small headless-Chromium driver over the DevTools protocol (websocket-client), for tests that
must see a page as a browser does: console errors, network requests, the DOM, a screenshot."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-port=0", "--remote-allow-origins=*"]


def available() -> str | None:
    """None when Chromium can be driven here, else the reason why not."""
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        return "Chromium is not installed (Debian package `chromium`; .ci/run installs it as root)"
    try:
        import websocket  # noqa: F401
    except ImportError:
        return "websocket-client is not installed (pip install -e '.[test]')"
    return None


class Page:
    def __init__(self, ws):
        self.ws, self.next_id, self.events = ws, 0, []

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        msg_id = self.next_id
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        self.ws.settimeout(60)
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for e in self.events:
            if e.get("method") == method:
                return e
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            msg = json.loads(self.ws.recv())
            self.events.append(msg)
            if msg.get("method") == method:
                return msg
        raise TimeoutError(method)

    def drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        self.ws.settimeout(0.1)
        while time.monotonic() < end:
            try:
                self.events.append(json.loads(self.ws.recv()))
            except Exception:  # websocket timeout: nothing more arrived
                pass

    def evaluate(self, expression: str) -> Any:
        return self.send("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")


class Browser:
    """`with Browser() as b: page = b.open(path)`: a fresh profile, torn down at exit."""

    def __enter__(self) -> Browser:
        self.profile = tempfile.mkdtemp(prefix="tw-chromium-")
        exe = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
        self.proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("Chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])
        return self

    def open(self, path: Path, width: int = 1200, height: int = 900) -> Page:
        import websocket

        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10).read())
        target = next(t for t in targets if t["type"] == "page")
        page = Page(websocket.create_connection(target["webSocketDebuggerUrl"], timeout=30))
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.send(f"{domain}.enable")
        page.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)
        page.send("Page.navigate", url=Path(path).resolve().as_uri())
        page.wait_for("Page.loadEventFired")
        page.drain(0.5)
        return page

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def console_errors(page: Page) -> list[str]:
    out = []
    for e in page.events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.exceptionThrown":
            out.append(p["exceptionDetails"].get("text", "exception"))
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(" ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
        elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
            out.append(p["entry"].get("text", ""))
        elif m == "Network.loadingFailed":
            out.append(f"failed to load: {p.get('errorText')}")
    return out


def network_requests(page: Page) -> list[str]:
    """URLs the page asked for beyond its own file and inline data: (http, https, ws, ...)."""
    urls = [e["params"]["request"]["url"] for e in page.events if e.get("method") == "Network.requestWillBeSent"]
    return [u for u in urls if not u.startswith(("file:", "data:", "about:"))]


def screenshot(page: Page, out: Path) -> Path:
    height = page.evaluate("document.documentElement.scrollHeight")
    page.send("Emulation.setDeviceMetricsOverride", width=1200, height=int(height), deviceScaleFactor=1,
              mobile=False)
    data = page.send("Page.captureScreenshot", format="png")["data"]
    out.write_bytes(base64.b64decode(data))
    return out
