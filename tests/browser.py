"""A page opened in headless Chromium, driven over the DevTools protocol on a pipe (no driver
package and no port: Chromium's ``--remote-debugging-pipe`` reads commands on fd 3 and writes
on fd 4, each a JSON message ended by a NUL byte).

``python tests/browser.py PAGE.html SHOT.png [WIDTH HEIGHT]`` writes a screenshot of the page's
first WIDTH x HEIGHT pixels (the whole page without them).
"""
import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")

# What the page holds once loaded: every image (its natural width is 0 when it did not load)
# and every table (rows, data cells, and its rendered height).
INSPECT = """(() => ({
  images: [...document.images].map(i => ({src: i.getAttribute("src"), width: i.naturalWidth,
                                          complete: i.complete})),
  tables: [...document.querySelectorAll("table")].map(t => ({
    rows: t.rows.length, cells: t.querySelectorAll("td").length,
    height: t.getBoundingClientRect().height})),
  title: document.title,
}))()"""


def find_chromium():
    """The path of a Chromium (Debian's package ``chromium``), or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium; :meth:`open` loads a page and says what it found."""

    def __init__(self, executable=None, timeout=60.0):
        executable = executable or find_chromium()
        if executable is None:
            raise FileNotFoundError("no Chromium found (apt-get install chromium)")
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(prefix="fastff-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # fds 3 and 4 in the child: moved above 10 first, so that dup2 never closes the other
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w)]

        def child_fds():
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)
        self.proc = subprocess.Popen(
            [executable, "--headless", "--remote-debugging-pipe", "--no-sandbox",
             "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--allow-file-access-from-files", f"--user-data-dir={self._profile.name}",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=child_fds, pass_fds=(3, 4, *high))
        for fd in (to_browser_r, from_browser_w, *high):
            os.close(fd)
        self._next_id, self._buffer, self.events = 0, b"", []

    # -- the protocol ------------------------------------------------------------------------
    def _read(self, deadline):
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise ConnectionError("Chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method, session=None, **params):
        """Send one command; return its result (events met meanwhile go to :attr:`events`)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method):
        """Wait for the event ``method`` (or find it among those already met)."""
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._read(deadline))

    # -- pages -------------------------------------------------------------------------------
    def open(self, page, width=1280, screenshot=None, height=900, full_page=True):
        """Load ``page`` (a file), wait for its load event (its images loaded or failed), and
        return what :data:`INSPECT` finds, with ``errors``: the console's errors, uncaught
        exceptions and failed loads. ``screenshot``: a path for a PNG of the whole page (or of
        its first ``height`` pixels where not ``full_page``)."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session)
        self.send("Emulation.setDeviceMetricsOverride", session, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self.events.clear()
        self.send("Page.navigate", session, url=Path(page).resolve().as_uri())
        self.wait_for("Page.loadEventFired")
        found = self.send("Runtime.evaluate", session, expression=INSPECT,
                          returnByValue=True)["result"]["value"]
        found["errors"] = [_error(e) for e in self.events if _error(e)]
        if screenshot is not None:
            shot = self.send("Page.captureScreenshot", session, format="png",
                             captureBeyondViewport=full_page)
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
        return found

    def close(self):
        try:
            self.send("Browser.close")
        except (OSError, TimeoutError, ConnectionError, RuntimeError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self._profile.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _error(event):
    """The text of an error event (console error, uncaught exception, failed load), or None."""
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled" and params.get("type") == "error":
        return "console: " + " ".join(str(a.get("value", a.get("description")))
                                      for a in params.get("args", []))
    if method == "Runtime.exceptionThrown":
        return "exception: " + params["exceptionDetails"].get("text", "")
    if method == "Log.entryAdded" and params["entry"].get("level") == "error":
        return f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}"
    return None


if __name__ == "__main__":
    page, shot = sys.argv[1], sys.argv[2]
    with Browser() as browser:
        size = dict(width=int(sys.argv[3]), height=int(sys.argv[4]), full_page=False) \
            if len(sys.argv) > 4 else {}
        found = browser.open(page, screenshot=shot, **size)
    print(json.dumps({k: v for k, v in found.items() if k != "images"}, indent=1))
    print(len(found["images"]), "images,", sum(i["width"] > 0 for i in found["images"]), "loaded")
