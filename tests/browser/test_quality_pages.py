"""What a user sees, in a real browser: Debian's chromium driven by chromium-driver and
selenium opens the quality report and the Data Docs from disk (file://) with every
network lookup disabled, and checks that the charts load and the quarantine rows show.

``make test`` installs chromium + chromium-driver when they are missing (target
``browser-deps``); the tests skip, saying so, only where they cannot be installed.
Set QUALITY_SCREENSHOTS_DIR to also save the screenshots docs/quality.md shows.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest

from extractor.pipeline.quality.datadocs import run_page_name, write_index
from extractor.pipeline.quality.report import CHARTS, write_report
from extractor.pipeline.warehouse import open_warehouse
from extractor.testing.quality_history import NEW, OLD, fill_history

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="Debian's chromium + chromium-driver are not installed and `make browser-deps` "
           "could not install them (apt-get install chromium chromium-driver)")

FIRST, SWITCH, LAST = dt.date(2026, 3, 1), dt.date(2026, 3, 5), dt.date(2026, 3, 7)


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """Seven daily runs (a model switch on the fifth day): their Data Docs and the report."""
    root = tmp_path_factory.mktemp("quality-pages")
    docs = root / "data_docs"
    warehouse = open_warehouse(f"duckdb:///{root / 'warehouse.duckdb'}")
    warehouse.ensure_schema()
    try:
        fill_history(warehouse, FIRST, SWITCH, LAST, receipts=30, data_docs_dir=str(docs))
        write_report(warehouse, docs / "report", days=7, end=LAST, data_docs_link="../index.html")
        last_run = f"scheduled__{LAST}T00:00:00+00:00"
        quarantined = warehouse.fetch("SELECT source, stage FROM quarantine WHERE run_id = ?", (last_run,))
    finally:
        warehouse.close()
    write_index(docs)
    return docs, last_run, quarantined


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--hide-scrollbars",
                "--host-resolver-rules=MAP * ~NOTFOUND"):  # nothing could load from a network
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _open(driver, path: Path) -> None:
    driver.get(path.as_uri())
    assert driver.execute_script("return document.readyState") == "complete"


def _fetched_remotely(driver) -> list[str]:
    return driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => !n.startsWith('file:') && !n.startsWith('data:'))")


def _screenshot(driver, name: str) -> None:
    """Full-page PNG for the docs, reduced to a 256-colour palette to stay small."""
    target = os.environ.get("QUALITY_SCREENSHOTS_DIR")
    if not target:
        return
    from PIL import Image

    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(height + 160, 600), 4000))  # + the window's own chrome
    path = Path(target) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    with Image.open(path) as image:
        image.convert("RGB").quantize(colors=256).save(path, optimize=True)
    driver.set_window_size(1280, 900)


def test_the_report_shows_every_chart(browser, pages):
    from selenium.webdriver.common.by import By

    docs, _, _ = pages
    _open(browser, docs / "report" / "index.html")
    images = browser.find_elements(By.TAG_NAME, "img")
    assert [Path(i.get_attribute("src")).stem for i in images] == list(CHARTS)
    for image in images:
        loaded = browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth",
                                        image)
        assert loaded and loaded > 400, image.get_attribute("src")
        assert image.is_displayed() and image.size["width"] > 300
    versions = browser.find_element(By.ID, "versions-table").text
    assert OLD in versions and NEW in versions
    assert browser.find_element(By.ID, "reasons-table").is_displayed()
    assert _fetched_remotely(browser) == []
    _screenshot(browser, "quality-report")


def test_a_data_docs_page_shows_the_quarantine_rows(browser, pages):
    from selenium.webdriver.common.by import By

    docs, last_run, quarantined = pages
    _open(browser, docs / "index.html")
    runs = browser.find_elements(By.CSS_SELECTOR, "tr.run-row")
    assert len(runs) == 7 and last_run in runs[0].text  # newest first
    _screenshot(browser, "data-docs-index")
    runs[0].find_element(By.TAG_NAME, "a").click()
    assert browser.current_url.endswith(run_page_name(last_run))
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.quarantine-row")
    assert len(rows) == len(quarantined) > 0
    assert all(row.is_displayed() for row in rows)
    shown = sorted((row.find_elements(By.TAG_NAME, "td")[1].text,
                    row.find_elements(By.TAG_NAME, "td")[2].text) for row in rows)
    assert shown == sorted((Path(source).name, stage) for source, stage in quarantined)
    badge = browser.find_element(By.CSS_SELECTOR, "h1 .badge")
    assert browser.execute_script("return getComputedStyle(arguments[0]).backgroundColor",
                                  badge) not in ("", "rgba(0, 0, 0, 0)")  # the inline CSS applied
    assert _fetched_remotely(browser) == []
    _screenshot(browser, "data-docs-run")
