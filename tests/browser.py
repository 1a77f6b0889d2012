"""A small Chrome DevTools Protocol client over ``--remote-debugging-pipe``: a real headless browser
for the tests, with no dependency beyond the standard library.

Chromium reads commands from file descriptor 3 and writes answers and events to descriptor 4,
each message one JSON object ended by a NUL byte. :class:`Browser` starts Debian's chromium with a
throw-away profile, opens one page target and records what the page did: console messages,
uncaught exceptions, log entries and every network request it tried (``Network`` events, and
``Fetch`` pausing each request so one not to a ``file:`` or ``data:`` URL is failed, not made).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any


class BrowserError(Exception):
    """Chromium answered a command with an error, exited, or did not answer in time."""


@dataclass
class PageLog:
    """What a page did while it loaded and ran."""

    console: list[dict[str, Any]] = field(default_factory=list)
    exceptions: list[dict[str, Any]] = field(default_factory=list)
    log_entries: list[dict[str, Any]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    #: Requests to anything but file: and data: URLs (each was failed, never sent).
    blocked: list[str] = field(default_factory=list)

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries, as text."""
        found = [
            " ".join(str(a.get("value", a.get("description", ""))) for a in m.get("args", []))
            for m in self.console
            if m.get("type") in {"error", "assert"}
        ]
        found += [e.get("exceptionDetails", {}).get("text", "exception") for e in self.exceptions]
        found += [
            f"{e['entry'].get('source')}: {e['entry'].get('text')}"
            for e in self.log_entries
            if e["entry"].get("level") == "error"
        ]
        return found


class Browser:
    """Headless chromium driven over a pipe; use as a context manager."""

    def __init__(self, program: str, *, timeout: float = 30.0) -> None:
        self._program = program
        self._timeout = timeout
        self._next_id = 0
        self._buffer = b""
        self._events: list[dict[str, Any]] = []
        self._profile = tempfile.TemporaryDirectory(prefix="cost-sync-chromium-")
        self.log = PageLog()
        self._session: str | None = None

    def __enter__(self) -> Browser:
        # Our ends: we write commands into to_chrome[1], read answers from from_chrome[0].
        to_chrome = os.pipe()
        from_chrome = os.pipe()
        self._write_fd, self._read_fd = to_chrome[1], from_chrome[0]
        child_in, child_out = to_chrome[0], from_chrome[1]

        def child_fds() -> None:  # in the child, before exec: its descriptors 3 and 4
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        self._process = subprocess.Popen(
            [
                self._program,
                "--headless",
                "--remote-debugging-pipe",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--metrics-recording-only",
                f"--user-data-dir={self._profile.name}",
                "--window-size=1200,900",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Descriptors 3 and 4 are made by dup2 after the fork; closing "all but pass_fds" would
            # close them again, so nothing is closed (the parent's other descriptors are close-on-exec).
            close_fds=False,
            preexec_fn=child_fds,
        )
        os.close(child_in)
        os.close(child_out)
        os.set_blocking(self._read_fd, True)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)
        # Pause every request; file: and data: continue, anything else is failed and recorded.
        self.call("Fetch.enable", session=True, patterns=[{"urlPattern": "*"}])
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._process.poll() is None:
                with contextlib.suppress(BrowserError):
                    self.call("Browser.close")
                try:
                    self._process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
        finally:
            os.close(self._write_fd)
            os.close(self._read_fd)
            self._profile.cleanup()

    # -- the protocol ------------------------------------------------------------------------------

    def call(self, method: str, *, session: bool = False, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer, handling the events that arrive meanwhile."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self._timeout
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result
            self._event(answer)

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise BrowserError("chromium did not answer in time")
            if self._process.poll() is not None:
                raise BrowserError(f"chromium exited with {self._process.returncode}")
            chunk = os.read(self._read_fd, 1 << 16)
            if not chunk:
                raise BrowserError("chromium closed the pipe")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        return message

    def _event(self, event: dict[str, Any]) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            self.log.console.append(params)
        elif method == "Runtime.exceptionThrown":
            self.log.exceptions.append(params)
        elif method == "Log.entryAdded":
            self.log.log_entries.append(params)
        elif method == "Network.requestWillBeSent":
            self.log.requests.append(params["request"]["url"])
        elif method == "Fetch.requestPaused":
            url = params["request"]["url"]
            if url.startswith(("file:", "data:")):
                self._send("Fetch.continueRequest", requestId=params["requestId"])
            else:
                self.log.blocked.append(url)
                self._send("Fetch.failRequest", requestId=params["requestId"], errorReason="BlockedByClient")
        self._events.append(event)

    def _send(self, method: str, **params: Any) -> None:
        """A command whose answer is not waited for (sent from inside event handling)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params, "sessionId": self._session}
        os.write(self._write_fd, json.dumps(message).encode() + b"\0")

    # -- what the tests use --------------------------------------------------------------------------

    def open(self, path: Path) -> None:
        """Load a file and wait until it and everything it asks for has loaded."""
        self._events.clear()
        self.call("Page.navigate", session=True, url=path.resolve().as_uri())
        deadline = time.monotonic() + self._timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self._events):
            self._event(self._read(deadline))
        # Let late console messages and requests arrive.
        self.evaluate("new Promise(r => requestAnimationFrame(() => setTimeout(r, 100)))")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if a promise)."""
        result = self.call(
            "Runtime.evaluate", session=True, expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"evaluate failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def pdf(self) -> bytes:
        """The page printed as Chromium prints it (A4 from the page's own @page rule)."""
        import base64

        data = self.call("Page.printToPDF", session=True, preferCSSPageSize=True)["data"]
        return base64.b64decode(data)
