"""The quality report over time, on a real DuckDB warehouse filled the way the pipeline
fills it (``extractor.testing.quality_history``: synthetic results -> GX validation -> run
summary -> one-transaction load): six days of one extractor version, then a switch to a
worse one for four days."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from extractor.pipeline.quality.history import load_history, reason_category
from extractor.pipeline.quality.report import CHARTS, write_report
from extractor.pipeline.warehouse import open_warehouse
from extractor.testing.quality_history import NEW, OLD, fill_history

FIRST = dt.date(2026, 3, 1)
SWITCH = dt.date(2026, 3, 7)  # NEW runs from this day on
LAST = dt.date(2026, 3, 10)
PER_DAY = 40


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    wh = open_warehouse(f"duckdb:///{tmp_path_factory.mktemp('wh') / 'warehouse.duckdb'}")
    wh.ensure_schema()
    fill_history(wh, FIRST, SWITCH, LAST, receipts=PER_DAY)
    yield wh
    wh.close()


def test_history_splits_days_by_version(warehouse):
    history = load_history(warehouse, days=10, end=LAST)
    assert history.versions == [OLD, NEW]  # in order of first appearance
    assert history.first_day == {OLD: FIRST, NEW: SWITCH}
    assert [d for d, _ in history.series(NEW)] == [SWITCH + dt.timedelta(days=i) for i in range(4)]
    stored = warehouse.fetch("SELECT COUNT(*) FROM quarantine")[0][0]
    assert sum(c.quarantined for c in history.cells.values()) == stored
    assert all(c.receipts == PER_DAY for c in history.cells.values())
    # the window is honoured: the last 3 days hold only the new version
    assert load_history(warehouse, days=3, end=LAST).versions == [NEW]


@pytest.fixture(scope="module")
def report(warehouse, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, write_report(warehouse, out, days=10, end=LAST, data_docs_link="../index.html")


def test_report_numbers_show_the_switch(report):
    out, result = report
    numbers = json.loads((out / "report.json").read_text())
    old, new = numbers["versions"][OLD], numbers["versions"][NEW]
    assert (old["runs"], new["runs"], result["runs"]) == (6, 4, 10)
    assert new["quarantine_rate"] > old["quarantine_rate"] + 0.1
    assert old["days"]["2026-03-01"]["fill_rates"]["phone"] > 0.5
    assert all(d["fill_rates"]["phone"] == 0 for d in new["days"].values())
    assert (old["mean_receipts_per_s"], new["mean_receipts_per_s"]) == (2.0, 8.0)
    assert any(r.startswith("extract: model output is not JSON") for r in new["reasons"])
    assert any(r.startswith("validate: expect_") for r in new["reasons"])
    assert 0 < old["mean_confidence"] <= 1


def test_report_writes_charts_and_an_offline_page(report):
    from PIL import Image

    tmp_path, result = report
    assert result["page"] == str(tmp_path / "index.html")
    for name in CHARTS:
        png = tmp_path / f"{name}.png"
        with Image.open(png) as image:
            assert image.format == "PNG" and image.width > 400 and image.height > 200
        assert png.stat().st_size < 300_000
    page = (tmp_path / "index.html").read_text()
    assert not re.search(r"https?://", page)  # nothing to fetch from the internet
    assert all(f'src="{name}.png"' in page for name in CHARTS)
    assert OLD in page and NEW in page and 'href="../index.html"' in page
    assert page.count("<tr>") >= 3  # a row per version in the versions table


def test_an_empty_window_still_renders(warehouse, tmp_path):
    result = write_report(warehouse, tmp_path, days=5, end=dt.date(2025, 1, 1))
    assert result["runs"] == 0 and result["versions"] == []
    assert all((tmp_path / f"{name}.png").stat().st_size > 0 for name in CHARTS)
    assert "Nothing was quarantined" in (tmp_path / "index.html").read_text()
    with pytest.raises(ValueError, match="days"):
        write_report(warehouse, tmp_path, days=0)


def test_reason_categories():
    assert reason_category("extract", "bad image: not an image (b'ab')", []) == ["extract: bad image"]
    assert reason_category("validate", "failed expectations: x", ["a(b)", "c(d)"]) == [
        "validate: a(b)", "validate: c(d)"]


def test_cli_report_subcommand(warehouse, tmp_path, capsys):
    from extractor.cli import main

    [(path,)] = warehouse.fetch(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()")
    out = tmp_path / "report"
    assert main(["report", "--warehouse", f"duckdb:///{path}", "--output-dir", str(out),
                 "--days", "10", "--end", str(LAST)]) == 0
    assert "10 runs, 2 extractor versions" in capsys.readouterr().out
    assert (out / "index.html").exists() and (out / "fill_rate.png").exists()
    assert main(["report", "--warehouse", f"duckdb:///{tmp_path}/typo.duckdb",
                 "--output-dir", str(out)]) == 2
    assert "no such DuckDB file" in capsys.readouterr().err
    assert not (tmp_path / "typo.duckdb").exists()
    with pytest.raises(SystemExit):
        main(["report", "--warehouse", f"duckdb:///{path}", "--output-dir", str(out), "--days", "0"])
