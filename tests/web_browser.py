"""Serve a folder on 127.0.0.1 and read a page's result in headless Chromium (Debian's
``chromium``, driven by Playwright without a browser download of its own)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
# as root Chromium needs --no-sandbox; the machine's network is closed, so nothing may call out
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def missing() -> str | None:
    """Why a browser test cannot run here (one line), or None."""
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if shutil.which("npm") is None:
        return "no npm on PATH (apt-get install npm)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "no Playwright for Python (pip install playwright)"
    return None


class _Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".wasm": "application/wasm"}

    def log_message(self, format, *args):  # noqa: A002
        pass


@contextlib.contextmanager
def serving(folder: Path):
    """``http://127.0.0.1:PORT/`` serving ``folder`` while the block runs."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def page_result(url: str, timeout_s: float = 120) -> tuple[dict, list[str]]:
    """(the JSON in ``#edgevit-result`` once its data-state is set, the console's errors)."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(url)
            element = page.wait_for_selector("#edgevit-result[data-state]", state="attached",
                                             timeout=timeout_s * 1000)
            return json.loads(element.text_content()), errors
        finally:
            browser.close()
