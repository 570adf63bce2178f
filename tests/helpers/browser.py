"""Headless chromium for the tests of the side-by-side page: where one is, a page's DOM, and
the boxes of the page's step cells as the browser laid them out.

    browser = chromium()              # None where none is found ($ROSETTA_CHROMIUM names one)
    boxes = layout(browser, page)     # a copy of the page with MEASURE appended
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Appended to a copy of a page: writes every step cell's box, as the browser laid it out, into the
# DOM, with the page it belongs to (the enclosing section.page, where pages are put one after another).
MEASURE = """<script>
const boxes = [...document.querySelectorAll("td.side[data-step]")].map(cell => {
  const r = cell.getBoundingClientRect(), section = cell.closest("section.page");
  return {page: section ? section.dataset.page : "", step: cell.dataset.step, framework: cell.dataset.framework,
          top: r.top, left: r.left, right: r.right, height: r.height};
});
const out = document.createElement("pre"); out.id = "layout"; out.textContent = JSON.stringify(boxes);
document.body.appendChild(out);
</script>"""


def chromium() -> str | None:
    found = os.environ.get("ROSETTA_CHROMIUM")
    return found or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


def browse(browser: str, page: Path, *flags: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *flags, page.as_uri()],
                              capture_output=True, text=True, timeout=60)


def layout(browser: str, page: Path) -> list:
    """The boxes MEASURE writes, from chromium's DOM once ``page`` has loaded."""
    dumped = browse(browser, page, "--window-size=1400,1000", "--dump-dom")
    found = re.search(r'<pre id="layout">(.*?)</pre>', dumped.stdout, re.S)
    assert found, f"chromium gave no layout of {page}: {dumped.stderr[-2000:]}"
    return json.loads(html.unescape(found[1]))
