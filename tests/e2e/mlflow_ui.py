"""Read MLflow's run-comparison page in headless Chromium (Debian's `chromium` and
`chromium-driver`), the way a reviewer sees it.

The page (MLflow 3.17, `#/compare-runs?runs=[...]&experiments=[...]`) is a React app: the
run header and the params are HTML tables, but the metrics are two react-virtualized grids
side by side, one with the metric names (one row per 45 px) and one with the values (one
column per run, in the order of the run-ID row). Values are shown rounded to three
significant digits.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = os.environ.get("RECLOOP_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("RECLOOP_CHROMEDRIVER", "/usr/bin/chromedriver")
# Without the background-networking switches Chromium keeps dialling Google's hosts, which
# this machine's closed network refuses (see the env notes).
CHROMIUM_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1600,2400",
)

# Runs in the page. Returns {"runs": [run ids in column order], "names": {top: metric},
# "values": {top: [shown text per run]}, "rows": {first cell: other cells} for every HTML table
# row (run details, params, tags), "more": whether the metric grid can scroll further}. The
# metric grids are virtualized (only the rows in view exist), so the caller scrolls with
# arguments[0] = true and reads again until "more" is false; cells are keyed by their `top`,
# which does not change with scrolling. The name grid is the one whose cells link to
# "#/metric?..."; the value grid, the next grid in document order, is the one that scrolls.
_READ_PAGE_JS = r"""
const byTop = (grid) => {
  const out = {};
  for (const c of grid.querySelectorAll('[style*="top"]')) {
    if (c.parentElement.getAttribute('role') !== 'rowgroup') continue;
    (out[parseFloat(c.style.top)] ??= []).push([parseFloat(c.style.left || '0'), c.innerText.trim()]);
  }
  for (const k in out) out[k] = out[k].sort((a, b) => a[0] - b[0]).map(([, t]) => t);
  return out;
};
const grids = [...document.querySelectorAll('[role="grid"]')];
const nameGrid = grids.find(g => g.querySelector('a[href*="#/metric"]'));
let names = {}, values = {}, more = false;
if (nameGrid) {
  names = Object.fromEntries(Object.entries(byTop(nameGrid)).map(([k, v]) => [k, v[0]]));
  const valueGrid = grids[grids.indexOf(nameGrid) + 1];  // it scrolls; the name grid follows it
  values = byTop(valueGrid);
  more = valueGrid.scrollTop + valueGrid.clientHeight < valueGrid.scrollHeight - 1;
  if (arguments[0] && more) valueGrid.scrollTop += valueGrid.clientHeight / 2;
}
const rows = {};
for (const tr of document.querySelectorAll('table tr')) {
  const cells = [...tr.querySelectorAll('th,td')].map(c => c.innerText.trim());
  if (cells.length > 1) rows[cells[0]] = cells.slice(1);
}
return {runs: rows['Run ID:'] || [], names: names, values: values, rows: rows, more: more};
"""


@dataclass(frozen=True)
class ComparePage:
    """What the comparison page showed: run ids in column order, each metric's shown value per
    run (None where the run has no such metric), every table row (params, tags, run details)."""

    url: str
    runs: list[str]
    metrics: dict[str, list[float | None]]
    rows: dict[str, list[str]]
    screenshot: Path

    def metric(self, key: str, run_id: str) -> float | None:
        if key not in self.metrics:
            raise KeyError(f"metric {key!r} is not on the page; it shows {sorted(self.metrics)}")
        return self.metrics[key][self.runs.index(run_id)]


def chromium_available() -> str | None:
    """None when headless Chromium can run here, else why not."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        return f"not installed: {missing} (Debian packages chromium, chromium-driver; `make test` installs them as root)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (it is in the dev extras)"
    return None


def compare_url(base: str, experiment_id: str, run_ids: list[str]) -> str:
    q = urllib.parse.quote
    return f"{base.rstrip('/')}/#/compare-runs?runs={q(json.dumps(run_ids))}&experiments={q(json.dumps([experiment_id]))}"


def _shown(text: str) -> float | None:
    return None if text in ("", "-") else float(text)


def read_compare_page(base: str, experiment_id: str, run_ids: list[str], screenshot: Path,
                      timeout: float = 90) -> ComparePage:
    """Open the comparison page, wait until its metrics are drawn, screenshot it, read it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="recloop-chromium-")
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    url = compare_url(base, experiment_id, run_ids)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        driver.get(url)
        WebDriverWait(driver, timeout).until(lambda d: d.execute_script(_READ_PAGE_JS, False)["names"])
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        # The first screen of metrics in view, so the screenshot shows numbers the test reads.
        driver.execute_script(
            "const a = document.querySelector('a[href*=\"#/metric\"]'); if (a) a.scrollIntoView({block: 'center'});")
        driver.save_screenshot(str(screenshot))
        names: dict[str, str] = {}
        values: dict[str, list[str]] = {}
        for _ in range(200):  # half a box per step; 200 steps cover far more metrics than a run has
            page = driver.execute_script(_READ_PAGE_JS, True)
            names |= page["names"]
            values |= page["values"]
            if not page["more"]:
                break
            time.sleep(0.2)  # react-virtualized renders the new rows on the scroll event
        page = driver.execute_script(_READ_PAGE_JS, False)
        names |= page["names"]
        values |= page["values"]
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    metrics = {name: [_shown(t) for t in values.get(top, [])] for top, name in names.items()}
    return ComparePage(url, page["runs"] or [], metrics, page["rows"], screenshot)
