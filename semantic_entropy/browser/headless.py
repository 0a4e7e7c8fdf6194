"""A headless Chromium driven through the system chromedriver: the page's tests, benchmark and screenshot.

A minimal client of the W3C WebDriver protocol (JSON over HTTP, standard library only), so
checking the page needs Debian's `chromium` and `chromium-driver` packages and nothing from
a Python registry. Chromium runs with a fresh profile folder and without background
networking, sync, component updates or a GPU; the profile is removed on close.

    with HeadlessChromium() as browser:
        browser.open("file:///.../report.html")
        browser.execute("return document.title")
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run")
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference


class WebDriverError(RuntimeError):
    pass


def available() -> bool:
    """Whether the system Chromium and its driver are installed."""
    return os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HeadlessChromium:
    """One Chromium session; `window` is the viewport size in CSS pixels."""

    def __init__(self, window: tuple[int, int] = (1400, 900), timeout: float = 30.0):
        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.driver = subprocess.Popen([CHROMEDRIVER, f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        self.session = None
        self.version = None
        try:
            self._wait_ready(timeout)
            options = {"binary": CHROMIUM,
                       "args": [*CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                                f"--window-size={window[0]},{window[1]}"]}
            capabilities = {"browserName": "chrome", "goog:chromeOptions": options,
                            "goog:loggingPrefs": {"browser": "ALL"}}
            reply = self._request("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})
            self.session = reply["sessionId"]
            self.version = reply.get("capabilities", {}).get("browserVersion")
        except BaseException:
            self.close()
            raise

    # ---- protocol

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self._request("GET", "/status").get("ready"):
                    return
            except (OSError, WebDriverError):
                pass
            time.sleep(0.1)
        raise WebDriverError(f"chromedriver did not start on port {self.port} within {timeout} s")

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                reply = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as e:
            reply = json.loads(e.read() or b"{}")
            value = reply.get("value", {})
            raise WebDriverError(f"{method} {path}: {value.get('error')}: {value.get('message', '')[:500]}") from None
        return reply.get("value") if isinstance(reply, dict) else reply

    def command(self, method: str, path: str, body: dict | None = None):
        return self._request(method, f"/session/{self.session}{path}", body)

    # ---- what the tests use

    def open(self, url: str) -> None:
        self.command("POST", "/url", {"url": url})

    def execute(self, script: str, *args):
        """Run `script` (a function body; `arguments` holds args) in the page and return its value."""
        return self.command("POST", "/execute/sync", {"script": script, "args": list(args)})

    def execute_async(self, script: str, *args):
        """Run `script` and wait for it to call its last argument (a callback) with the value to return."""
        return self.command("POST", "/execute/async", {"script": script, "args": list(args)})

    def find(self, css: str) -> dict:
        return self.command("POST", "/element", {"using": "css selector", "value": css})

    def find_all(self, css: str) -> list[dict]:
        return self.command("POST", "/elements", {"using": "css selector", "value": css})

    def click(self, element: dict) -> None:
        self.command("POST", f"/element/{element[ELEMENT]}/click", {})

    def type_text(self, element: dict, text: str) -> None:
        self.command("POST", f"/element/{element[ELEMENT]}/value", {"text": text})

    def text(self, element: dict) -> str:
        return self.command("GET", f"/element/{element[ELEMENT]}/text")

    def pointer(self, x: float, y: float, click: bool = False) -> None:
        """Move a mouse to viewport point (x, y), and click there when asked (WebDriver actions)."""
        steps = [{"type": "pointerMove", "duration": 0, "origin": "viewport", "x": int(round(x)), "y": int(round(y))}]
        if click:
            steps += [{"type": "pointerDown", "button": 0}, {"type": "pointerUp", "button": 0}]
        self.command("POST", "/actions", {"actions": [{"type": "pointer", "id": "mouse",
                                                       "parameters": {"pointerType": "mouse"}, "actions": steps}]})
        self.command("DELETE", "/actions")

    def console(self) -> list[dict]:
        """The browser console's entries since the last call ({level, message, ...})."""
        return self.command("POST", "/se/log", {"type": "browser"})

    def screenshot(self) -> bytes:
        return base64.b64decode(self.command("GET", "/screenshot"))

    def wait_for(self, script: str, timeout: float = 10.0, *args):
        """Poll `script` until it returns a truthy value; that value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.execute(script, *args)
            if value or time.monotonic() > deadline:
                if not value:
                    raise WebDriverError(f"timed out after {timeout} s waiting for: {script[:200]}")
                return value
            time.sleep(0.05)

    # ---- lifetime

    def close(self) -> None:
        if self.session is not None:
            try:
                self._request("DELETE", f"/session/{self.session}")
            except (OSError, WebDriverError):
                pass
            self.session = None
        if self.driver.poll() is None:
            self.driver.terminate()
            try:
                self.driver.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.driver.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> HeadlessChromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
