"""report.html in a real headless browser (Debian package `chromium`): the page loads
offline, its tables and charts render, nothing overflows the window, and a screenshot
is not blank. Skipped when no chromium is installed.

Set TSPRUNE_SCREENSHOT_DIR to keep the screenshot (report.png) for a look."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html import unescape

import numpy as np
import pytest
from test_report import example_report

from tsprune.report import render_html

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
                 if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH "
                                "(Debian/Ubuntu: apt-get install chromium)")

# appended to a copy of the page only: records what the browser decoded and laid out
PROBE = """<script>
addEventListener('load', () => {
  const r = e => e.getBoundingClientRect();
  document.body.setAttribute('data-probe', JSON.stringify({
    images: [...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight,
                                           Math.round(r(i).width)]),
    tables: [...document.querySelectorAll('table')].map(t => t.rows.length),
    best: [...document.querySelectorAll('td.best')].map(td => getComputedStyle(td).backgroundColor),
    scrollWidth: document.documentElement.scrollWidth, innerWidth: innerWidth,
    height: document.documentElement.scrollHeight}));
});
</script>"""


def _chromium(tmp_path, *args, timeout=120) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HOME": str(tmp_path)})


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    d = tmp_path_factory.mktemp("html")
    html = render_html(example_report())
    (d / "report.html").write_text(html, encoding="utf-8")
    (d / "probe.html").write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    return d


def test_dom_tables_and_decoded_charts(page):
    res = _chromium(page, "--window-size=1280,4000", "--virtual-time-budget=10000", "--dump-dom",
                    f"file://{page / 'probe.html'}")
    assert res.returncode == 0, res.stderr[-2000:]
    m = re.search(r'data-probe="([^"]*)"', res.stdout)
    assert m, "the load handler did not run: " + res.stdout[:500]
    probe = json.loads(unescape(m.group(1)))
    imgs = {alt: (ok, w, h, shown) for alt, ok, w, h, shown in probe["images"]}
    assert set(imgs) == {"forecasts of sample test windows", "per-layer structure, dense vs pruned",
                         "pruning curve"}
    for alt, (ok, w, h, shown) in imgs.items():
        assert ok and w >= 600 and h >= 200, (alt, w, h)   # decoded PNGs of real size
        assert 400 <= shown <= 1100, (alt, shown)           # scaled into the page column
    # accuracy (header + 6 rows) is the first table; the others render too
    assert probe["tables"][0] == 7 and len(probe["tables"]) >= 8
    assert probe["best"] and all(c == probe["best"][0] != "rgba(0, 0, 0, 0)" for c in probe["best"])
    assert probe["scrollWidth"] <= probe["innerWidth"], "the page overflows horizontally"
    assert 2000 < probe["height"] < 8000


def test_screenshot_is_not_blank(page):
    png = page / "report.png"
    res = _chromium(page, "--window-size=1280,4000", f"--screenshot={png}", f"file://{page / 'report.html'}")
    assert res.returncode == 0 and png.exists(), res.stderr[-2000:]
    from PIL import Image
    img = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    assert img.shape == (4000, 1280, 3)
    if os.environ.get("TSPRUNE_SCREENSHOT_DIR"):
        os.makedirs(os.environ["TSPRUNE_SCREENSHOT_DIR"], exist_ok=True)
        shutil.copy(png, os.path.join(os.environ["TSPRUNE_SCREENSHOT_DIR"], "report.png"))
    top = img[:1500]
    ink = (np.abs(top - top[5, 640]).sum(-1) > 60).mean()  # pixels unlike the page background
    assert 0.02 < ink < 0.6, ink
    # the pruned model's orange (#e07a1f) is drawn by the charts
    orange = (np.abs(img - np.array([0xE0, 0x7A, 0x1F])).sum(-1) < 40).sum()
    assert orange > 2000, orange
    # the highlighted best cells (#dff3e4) are visible
    green = (np.abs(img - np.array([0xDF, 0xF3, 0xE4])).sum(-1) < 6).sum()
    assert green > 500, green
