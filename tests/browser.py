"""A real browser for the web tests: headless Chromium driven through chromedriver (Selenium),
and the web front served by ``digest web`` as a process of its own on a loopback port.

The checks a page must pass, at 375 and 1280 px wide: no horizontal scrolling, nothing in the
browser's console (a CSP violation lands there too), a label on every form control, and body
text at a contrast of at least 4.5:1 against what is behind it. Full-page screenshots go to
``$DIGEST_SCREENSHOTS``, or ``tests/screenshots/`` (not committed), for a person to look at.
"""

from __future__ import annotations

import contextlib
import email
import email.message
import email.policy
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

from tests.conftest import REPO, Site

WIDTHS = (375, 1280)
SCHEMES = ("light", "dark")
SCREENSHOTS = Path(os.environ.get("DIGEST_SCREENSHOTS") or REPO / "tests" / "screenshots")
MIN_CONTRAST = 4.5
MISSING = (
    "a real browser needs Debian's chromium and chromium-driver"
    " (apt-get install chromium chromium-driver; .ci/run installs them)"
)


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    if found is None and Path(f"/usr/bin/{name}").exists():
        found = f"/usr/bin/{name}"
    return found


@dataclass
class Browser:
    """One headless Chromium; ``open`` a URL at a width, then ask what is wrong with the page."""

    driver: Any  # selenium.webdriver.Chrome (selenium is a test dependency only)
    width: int = WIDTHS[0]

    def resize(self, width: int, height: int = 800) -> None:
        """The viewport, through DevTools: a headless window is never narrower than 500 px."""
        self.width = width
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
        )

    def open(self, url: str) -> None:
        self.driver.get_log("browser")  # what an earlier page said is not this page's fault
        self.driver.get(url)

    def press(self, selector: str, timeout: float = 10) -> None:
        """Click the submit button at ``selector`` and wait for the page it leads to: a
        click returns before the browser has sent the form, let alone loaded the answer.

        The new page is told from the old one by its time origin, not by an element of the
        old page going stale: a recent ChromeDriver answers a question about a node of a
        page that is gone with "Node with given id does not belong to the document" rather
        than a stale-element error, and Selenium's ``staleness_of`` lets that through. A
        button refused that way just after a DevTools call is found again and clicked.
        """
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.wait import WebDriverWait

        origin = self.run("return performance.timeOrigin")
        for attempt in range(3):
            try:
                self.driver.find_element("css selector", selector).click()
                break
            except WebDriverException as exc:
                if "does not belong to the document" not in str(exc) or attempt == 2:
                    raise
                time.sleep(0.1)

        def loaded(driver: Any) -> bool:
            try:
                return bool(
                    driver.execute_script(
                        "return performance.timeOrigin !== arguments[0]"
                        " && document.readyState === 'complete'",
                        origin,
                    )
                )
            except WebDriverException:  # between two pages
                return False

        WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(loaded)

    def run(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def screenshot(self, name: str) -> Path:
        """The whole page (not only the viewport) as ``<name>-<width>.png``."""
        import base64

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {
                    "x": 0,
                    "y": 0,
                    "width": max(size["width"], self.width),
                    "height": size["height"],
                    "scale": 1,
                },
            },
        )
        path = SCREENSHOTS / f"{name}-{self.width}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def console(self, *, status: int = 200) -> list[str]:
        """What the browser logged as an error since the page was opened; a page opened for
        its error ``status`` may log that status for its own address, nothing else."""
        url = self.driver.current_url
        found = []
        for entry in self.driver.get_log("browser"):
            if entry["level"] != "SEVERE":
                continue
            message = entry["message"]
            expected = entry.get("source") == "network" and (
                (message.startswith(url) and f"status of {status}" in message and status != 200)
                # Asked for by the browser itself, not by the page: no page links an icon.
                or message.startswith(urljoin(url, "/favicon.ico"))
            )
            if not expected:
                found.append(f"console: {message}")
        return found

    def overflow(self) -> list[str]:
        """Content wider than the screen. A phone widens its layout viewport (innerWidth) to
        fit wide content and zooms out, so both are held to the width of the screen."""
        wide, viewport = self.run(
            "return [document.documentElement.scrollWidth, window.innerWidth]"
        )
        if max(wide, viewport) <= self.width:
            return []
        return [f"scrolls sideways: {max(wide, viewport)} px of content on {self.width} px"]

    def unlabelled(self) -> list[str]:
        return [f"no label: {html}" for html in self.run(_UNLABELLED)]

    def low_contrast(self, minimum: float = MIN_CONTRAST) -> list[str]:
        return [
            f"contrast {ratio:.2f}:1 < {minimum}:1 ({fg} on {bg}): {text!r}"
            for text, ratio, fg, bg in self.run(_CONTRAST)
            if ratio < minimum
        ]

    def problems(self, *, status: int = 200) -> list[str]:
        """Everything wrong with the page open now, one line each."""
        return [
            *self.console(status=status),
            *self.overflow(),
            *self.unlabelled(),
            *self.low_contrast(),
        ]

    def colours(self, scheme: str) -> None:
        """``light`` or ``dark``: what ``prefers-color-scheme`` answers from now on."""
        self.driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
        )

    def check(self, url: str, name: str, *, status: int = 200) -> list[str]:
        """``url`` at every width, light and dark: a screenshot each, and the problems found
        (each line says at which width and in which scheme)."""
        found = []
        for scheme in SCHEMES:
            self.colours(scheme)
            for width in WIDTHS:
                self.resize(width)
                self.open(url)
                self.screenshot(name if scheme == "light" else f"{name}-{scheme}")
                found += [f"{width}px {scheme}: {p}" for p in self.problems(status=status)]
        self.colours("light")
        return found


# Form controls a person types into or picks from, without a label that says what they are.
_UNLABELLED = """
const named = (e) => (e.labels && [...e.labels].some((l) => l.textContent.trim()))
  || (e.getAttribute('aria-label') || '').trim()
  || (e.getAttribute('aria-labelledby') || '').split(/\\s+/).some(
       (id) => id && document.getElementById(id) && document.getElementById(id).textContent.trim());
const controls = [...document.querySelectorAll('input, select, textarea')]
  .filter((e) => !['hidden', 'submit', 'button', 'reset', 'image'].includes(e.type));
const buttons = [...document.querySelectorAll('button, input[type=submit], input[type=button]')];
return [
  ...controls.filter((e) => !named(e)),
  ...buttons.filter((e) => !(e.textContent.trim() || (e.value || '').trim()
                             || (e.getAttribute('aria-label') || '').trim())),
].map((e) => e.outerHTML.slice(0, 160));
"""

# WCAG 2 contrast of every visible piece of text against the backgrounds behind it (colours
# with alpha are laid over what is beneath, down to the first opaque one or the white canvas).
_CONTRAST = """
const rgba = (c) => {
  const m = c.match(/rgba?\\(([^)]*)\\)/);
  if (!m) return null;
  const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
  return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
};
const over = (top, bottom) => {
  const a = top[3];
  return [0, 1, 2].map((i) => top[i] * a + bottom[i] * (1 - a)).concat([1]);
};
const luminance = (c) => {
  const [r, g, b] = c.slice(0, 3).map((v) => {
    v /= 255;
    return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const background = (el) => {
  const layers = [];
  for (let e = el; e; e = e.parentElement) {
    const c = rgba(getComputedStyle(e).backgroundColor);
    if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
  }
  let colour = [255, 255, 255, 1];
  for (const layer of layers.reverse()) colour = over(layer, colour);
  return colour;
};
const shown = (e) => {
  const s = getComputedStyle(e);
  return e.getClientRects().length && s.visibility === 'visible' && Number(s.opacity) > 0;
};
const out = [];
for (const e of document.body.querySelectorAll('*')) {
  const text = [...e.childNodes].filter((n) => n.nodeType === 3)
    .map((n) => n.textContent).join(' ').trim();
  if (!text || !shown(e)) continue;
  const bg = background(e);
  const fg = over(rgba(getComputedStyle(e).color) || [0, 0, 0, 1], bg);
  const [hi, lo] = [luminance(fg), luminance(bg)].sort((a, b) => b - a);
  const show = (c) => 'rgb(' + c.slice(0, 3).map(Math.round).join(', ') + ')';
  out.push([text.slice(0, 60), (hi + 0.05) / (lo + 0.05), show(fg), show(bg)]);
}
return out;
"""


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium, or a skip naming what to install when it is not there."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _tool("chromium"), _tool("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip(MISSING)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--no-proxy-server",  # loopback only, whatever the environment says
        "--disable-extensions",
        "--window-size=1280,800",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield Browser(driver)
    finally:
        driver.quit()


@dataclass
class LiveServer:
    """``digest web`` of a site, on ``url``; mail goes to ``.eml`` files in ``mail``."""

    url: str
    process: subprocess.Popen[str]
    mail: Path
    log: Path

    def emails(self, to: str) -> list[email.message.EmailMessage]:
        """The messages written for ``to``, oldest first."""
        found = []
        for path in sorted(self.mail.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns):
            parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            assert isinstance(parsed, email.message.EmailMessage)
            if to.lower() in str(parsed["To"]).lower():
                found.append(parsed)
        return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def live_server(site: Site, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    """``digest web`` for ``site`` on a free loopback port, until the block ends.

    The site's links and its file transport then point at that server, for the commands
    run in this process (``site.cli``) and in others (``site.process``) alike.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    mail = site.root / "mail"
    mail.mkdir(exist_ok=True)
    for name, value in {
        "DIGEST_BASE_URL": url,
        "DIGEST_MAIL_TRANSPORT": f"file://{mail}",
        "DIGEST_WEB_HOST": "127.0.0.1",
        "DIGEST_WEB_PORT": str(port),
    }.items():
        site.env[name] = value
        monkeypatch.setenv(name, value)
    log = site.root / "web.log"
    with log.open("w") as out:
        process = site.spawn("web", stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(url, process, log)
        yield LiveServer(url, process, mail, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(url: str, process: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + 30
    with httpx.Client(trust_env=False, timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"digest web exited with {process.returncode}:\n{log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"{url}/static/web.css").status_code == 200:
                    return
            time.sleep(0.1)
    pytest.fail(f"digest web did not answer on {url} within 30 s:\n{log.read_text()}")
