"""Warehouse behaviour on DuckDB (a file in tmp_path).

``WarehouseContract`` holds the behaviour every implementation must show; this module
runs it on DuckDB and tests/integration/test_warehouse_postgres.py runs the same class
on a real PostgreSQL database.
"""

import datetime as dt
from decimal import Decimal

import pytest

import extractor.pipeline.warehouse.ddl as ddl
from extractor.pipeline.records import QuarantineRecord, RunRecord
from extractor.pipeline.warehouse import open_warehouse
from extractor.pipeline.warehouse.base import convert_placeholders
from extractor.pipeline.warehouse.postgres_backend import normalise_uri
from extractor.schema import ExtractionResult, LineItem, Receipt, scalar_fields

V1 = "ocr:rapidocr@3.10.0:parser-v3"
V2 = "hf:meta-llama/Llama-3.2-11B-Vision-Instruct@abc123:v1"


def rid(i: int) -> str:
    return f"{i:064x}"


def ok(i: int, version: str = V1, n_items: int = 2, total: str = "12.345") -> ExtractionResult:
    items = [LineItem(name=f"item {k}", quantity=1, unit_price="1.50", line_total="1.50")
             for k in range(n_items)]
    receipt = Receipt(store_name=f"Shop {i}", date="2024-03-01", time="09:15", currency="EUR",
                      subtotal="11.00", tax_amount="1.345", total=total, line_items=items,
                      confidence={"total": 0.9})
    return ExtractionResult(receipt_id=rid(i), source=f"dt=2024-03-01/{i}.jpg", status="ok",
                            receipt=receipt, raw_text=f"raw {i}", extractor_version=version,
                            timings={"forward_s": 0.5})


def bad(i: int, version: str = V1, stage: str = "validate") -> QuarantineRecord:
    return QuarantineRecord(receipt_id=rid(i), source=f"dt=2024-03-01/{i}.jpg",
                            extractor_version=version, stage=stage, reason="failed expectations: x",
                            failed_expectations=["expect_column_values_to_not_be_null(total)"],
                            raw_text=f"raw {i}", receipt={"total": None})


def run(run_id: str = "scheduled__2024-03-02T00:00:00+00:00", version: str = V1) -> RunRecord:
    start = dt.datetime(2024, 3, 2, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    return RunRecord(run_id=run_id, dag_id="receipts_daily",
                     logical_date=dt.datetime(2024, 3, 2, tzinfo=dt.UTC),
                     partition_start=dt.datetime(2024, 3, 1, tzinfo=dt.UTC),
                     partition_end=dt.datetime(2024, 3, 2, tzinfo=dt.UTC),
                     extractor_version=version, model_id="rapidocr", revision="3.10.0",
                     prompt_version="parser-v3", started_at=start,
                     finished_at=start + dt.timedelta(minutes=5),
                     counts={"discovered": 3}, timings={"extract_s": 1.5}, decision="pass")


class WarehouseContract:
    """Subclasses provide the fixture ``open_wh``: a callable opening the same empty database."""

    @pytest.fixture
    def wh(self, open_wh):
        w = open_wh()
        w.ensure_schema()
        yield w
        w.close()

    def test_ensure_schema_is_idempotent_and_generated_from_the_schema(self, wh, open_wh):
        wh.ensure_schema()
        other = open_wh()
        other.ensure_schema()
        other.close()
        for table in ddl.TABLES:
            cols = [r[0] for r in wh.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                "AND table_schema = current_schema() ORDER BY ordinal_position", (table.name,))]
            assert cols == table.column_names
        assert set(scalar_fields()) < set(ddl.RECEIPTS.column_names)
        assert wh.table_counts() == {t.name: 0 for t in ddl.TABLES}

    def test_ensure_schema_adds_columns_the_schema_gained(self, open_wh):
        w = open_wh()
        w.execute('CREATE TABLE "runs" ("run_id" TEXT PRIMARY KEY, "extractor_version" TEXT NOT NULL)')
        w.execute('INSERT INTO "runs" VALUES (?, ?)', ("old-run", V1))
        w.ensure_schema()
        cols = {r[0] for r in w.fetch("SELECT column_name FROM information_schema.columns "
                                      "WHERE table_name = 'runs'")}
        assert cols == set(ddl.RUNS.column_names)
        assert w.fetch('SELECT run_id, decision FROM "runs"') == [("old-run", None)]
        w.close()

    def test_reload_gives_identical_tables(self, wh):
        valid, held = [ok(1), ok(2), ok(3, n_items=0)], [bad(4), bad(5, stage="extract")]
        first = wh.load(valid, held, run())
        assert first == {"receipts": 3, "line_items": 4, "quarantined": 2,
                         "replaced_receipts": 0, "replaced_quarantine": 0}
        before = wh.snapshot()
        second = wh.load(valid, held, run())
        assert second["replaced_receipts"] == 3 and second["replaced_quarantine"] == 2
        assert wh.snapshot() == before
        assert wh.table_counts() == {"receipts": 3, "receipt_line_items": 4, "quarantine": 2,
                                     "runs": 1, "alerts": 0, "extraction_claims": 0,
                                     "corrections": 0}

    def test_values_and_lineage_columns(self, wh):
        wh.load([ok(1, total="9999999999.9999")], [], run())
        row = wh.fetch("SELECT total, tax_amount, date, time, currency, run_id, model_id, revision, "
                       "prompt_version, loaded_at, line_item_count, confidence, timings "
                       "FROM receipts")[0]
        assert row[:5] == (Decimal("9999999999.9999"), Decimal("1.345"), dt.date(2024, 3, 1),
                           "09:15", "EUR")
        assert row[5:9] == ("scheduled__2024-03-02T00:00:00+00:00", "rapidocr", "3.10.0", "parser-v3")
        assert row[9] == dt.datetime(2024, 3, 1, 23, 0)  # the run's start, in UTC
        assert row[10] == 2
        assert row[11] == '{"total": 0.9}' and row[12] == '{"forward_s": 0.5}'
        items = wh.fetch("SELECT line_no, name, quantity, unit_price, line_total FROM receipt_line_items "
                         "ORDER BY line_no")
        assert items == [(1, "item 0", Decimal("1"), Decimal("1.5"), Decimal("1.5")),
                         (2, "item 1", Decimal("1"), Decimal("1.5"), Decimal("1.5"))]
        runs = wh.fetch("SELECT run_id, extractor_version, logical_date, counts, decision FROM runs")
        assert runs == [("scheduled__2024-03-02T00:00:00+00:00", V1, dt.datetime(2024, 3, 2),
                         '{"discovered": 3}', "pass")]

    def test_receipt_is_in_receipts_or_quarantine_never_both(self, wh):
        wh.load([ok(1), ok(2)], [], run("r1"))
        wh.load([ok(1, version=V2)], [], run("r1-v2", version=V2))  # another extractor version
        wh.load([ok(2)], [bad(1)], run("r2"))  # receipt 1 now fails validation
        assert wh.fetch("SELECT receipt_id FROM receipts WHERE extractor_version = ? ORDER BY 1",
                        (V1,)) == [(rid(2),)]
        assert wh.fetch("SELECT receipt_id, extractor_version FROM quarantine") == [(rid(1), V1)]
        assert wh.fetch("SELECT count(*) FROM receipt_line_items WHERE receipt_id = ? "
                        "AND extractor_version = ?", (rid(1), V1)) == [(0,)]
        wh.load([ok(1)], [], run("r3"))  # and passes again
        assert wh.fetch("SELECT count(*) FROM quarantine") == [(0,)]
        assert wh.fetch("SELECT count(*) FROM receipts WHERE receipt_id = ?", (rid(1),)) == [(2,)]
        # the other version's row was never touched
        assert wh.fetch("SELECT run_id FROM receipts WHERE extractor_version = ?", (V2,)) == [("r1-v2",)]

    def test_line_items_are_replaced_not_appended(self, wh):
        wh.load([ok(1, n_items=5)], [], run())
        wh.load([ok(1, n_items=1)], [], run())
        assert wh.fetch("SELECT line_no FROM receipt_line_items") == [(1,)]
        assert wh.fetch("SELECT line_item_count FROM receipts") == [(1,)]

    def test_already_extracted(self, wh):
        wh.load([ok(1)], [bad(2)], run())
        asked = [rid(1), rid(2), rid(3), rid(1)]
        assert wh.already_extracted(V1, asked) == {rid(1), rid(2)}
        assert wh.already_extracted(V2, asked) == set()
        assert wh.already_extracted(V1, []) == set()
        many = [rid(i) for i in range(5000)]
        assert wh.already_extracted(V1, many) == {rid(1), rid(2)}

    def test_inconsistent_input_is_refused(self, wh):
        with pytest.raises(ValueError, match="both valid and quarantined"):
            wh.load([ok(1)], [bad(1)], run())
        with pytest.raises(ValueError, match="duplicate"):
            wh.load([ok(1), ok(1)], [], run())
        assert wh.table_counts()["runs"] == 0

    def test_same_image_twice_in_quarantine_is_one_row(self, wh):
        twin = bad(1)
        twin.source = "dt=2024-03-01/copy.jpg"
        wh.load([], [bad(1), twin], run())
        assert wh.fetch("SELECT reason FROM quarantine") == [
            ("failed expectations: x (same image also at dt=2024-03-01/copy.jpg)",)]

    def test_failed_load_rolls_back_everything(self, wh):
        wh.load([ok(1)], [bad(2)], run())
        before = wh.snapshot()
        too_big = ok(3)
        too_big.receipt = too_big.receipt.model_copy(update={"total": Decimal("1e12")})
        with pytest.raises(Exception, match=r"(?i)overflow|could not convert"):  # driver error
            wh.load([ok(1, n_items=0), too_big], [], run("another-run"))
        assert wh.snapshot() == before

    def test_a_run_without_receipts_still_records_its_run(self, wh):
        assert wh.load([], [], run())["receipts"] == 0
        assert wh.fetch("SELECT run_id, decision FROM runs") == [
            ("scheduled__2024-03-02T00:00:00+00:00", "pass")]

    def test_receipts_current_shows_each_receipt_once_from_the_active_version(self, wh):
        def at(hour, version, origin="setting", decision="pass"):
            r = run(f"run-{hour}", version)
            start = dt.datetime(2024, 3, 2, hour, tzinfo=dt.UTC)
            r.started_at, r.finished_at = start, start + dt.timedelta(minutes=5)
            r.extractor_origin, r.decision = origin, decision
            return r

        def current():
            return sorted((int(r[0], 16), r[1], r[2]) for r in wh.fetch(
                "SELECT receipt_id, extractor_version, is_active_version FROM receipts_current"))

        v3 = "hf:some/candidate@def456:v1"
        assert current() == []
        wh.load([ok(1), ok(2)], [], at(1, V1))
        wh.load([ok(2, V2), ok(3, V2)], [bad(4, V2)], at(2, V2))       # the Variable moved to V2
        assert current() == [(1, V1, False), (2, V2, True), (3, V2, True)]
        # a comparison backfill through the DAG-run param changes nothing current
        wh.load([ok(1, v3), ok(2, v3), ok(3, v3)], [], at(3, v3, origin="param"))
        wh.load([], [], at(4, V1, decision="fail"))                     # nor does a failed run
        assert current() == [(1, V1, False), (2, V2, True), (3, V2, True)]
        # rollback: the Variable back to V1; its next run (even with nothing new) makes V1 active
        wh.load([], [], at(5, V1))
        assert current() == [(1, V1, True), (2, V1, True), (3, V2, False)]
        cols = [r[0] for r in wh.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'receipts_current' "
            "AND table_schema = current_schema() ORDER BY ordinal_position")]
        assert cols == ["is_active_version"] + ddl.RECEIPTS.column_names + list(ddl.REVIEW_VIEW_COLUMNS)

    def test_receipts_current_survives_a_column_added_to_receipts(self, wh, open_wh):
        wh.load([ok(1)], [], run())
        wh.execute('ALTER TABLE "receipts" ADD COLUMN "added_later" TEXT')  # not (yet) in the DDL
        wh.execute('DROP VIEW "receipts_current"')
        wh.execute('CREATE VIEW "receipts_current" AS SELECT TRUE AS "x", r.* FROM "receipts" r')
        other = open_wh()
        other.ensure_schema()  # replaces a view of another shape over the wider table
        other.close()
        cols = [r[0] for r in wh.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'receipts_current' "
            "AND table_schema = current_schema() ORDER BY ordinal_position")]
        assert cols == ["is_active_version"] + ddl.RECEIPTS.column_names + list(ddl.REVIEW_VIEW_COLUMNS)
        assert len(wh.fetch("SELECT * FROM receipts_current")) == 1

    def test_receipts_current_prefers_review_answers_and_keeps_the_models_rows(self, wh):
        from extractor.pipeline.review.corrections import Correction, record

        wh.load([ok(1), ok(2), ok(3)], [bad(4)], run())
        model_rows = wh.snapshot()

        def answer(i, decision, **values):
            fields = {n: None for n in scalar_fields()}
            fields.update({"store_name": f"Shop {i}", "total": Decimal("12.345"), **values})
            return Correction(receipt_id=rid(i), extractor_version=V1, decision=decision,
                              values=fields, corrected_fields=sorted(values), reviewer="alice",
                              reviewed_at=dt.datetime(2024, 3, 3, 8, tzinfo=dt.UTC),
                              source=f"dt=2024-03-01/{i}.jpg", review_run_id="review-1")

        record(wh, answer(1, "correct", total=Decimal("13.10")))
        record(wh, answer(2, "reject"))
        record(wh, answer(4, "correct", total=Decimal("7.00")))  # was quarantined
        record(wh, answer(1, "correct", total=Decimal("13.20")))  # answered again: replaced
        rows = wh.fetch("SELECT receipt_id, total, date, values_from, review_decision, reviewed_by, "
                        "run_id FROM receipts_current ORDER BY receipt_id")
        assert [(int(r[0], 16), r[1], r[3], r[4]) for r in rows] == [
            (1, Decimal("13.2"), "reviewer", "correct"), (2, Decimal("12.345"), "model", "reject"),
            (3, Decimal("12.345"), "model", None), (4, Decimal("7"), "reviewer", "correct")]
        assert rows[0][2] is None  # the reviewer's values replace the model's, cleared ones too
        assert rows[0][5] == "alice" and rows[3][6] is None  # no model row behind receipt 4
        assert wh.snapshot() == model_rows  # receipts, line items, quarantine, runs untouched
        assert wh.table_counts()["corrections"] == 3

    def test_alerts_are_appended(self, wh):
        a = wh.record_alert("r1", "warning", "quarantine rate 30%", {"rate": 0.3})
        b = wh.record_alert("r1", "warning", "quarantine rate 30%", {"rate": 0.3})
        assert a != b
        rows = wh.fetch("SELECT run_id, level, message, details FROM alerts ORDER BY alert_id")
        assert rows == [("r1", "warning", "quarantine rate 30%", '{"rate": 0.3}')] * 2

    def test_fetch_takes_either_placeholder_style(self, wh):
        wh.load([ok(1)], [], run())
        q = "SELECT count(*) FROM receipts WHERE receipt_id = {} AND store_name <> '?'"
        assert wh.fetch(q.format("?"), (rid(1),)) == [(1,)]
        assert wh.fetch(q.format("%s"), (rid(1),)) == [(1,)]

    def test_claims_keep_a_receipt_to_one_run_until_it_is_loaded(self, wh):
        ids, now = [rid(1), rid(2), rid(3)], dt.datetime(2026, 3, 2, 1, 0)
        assert wh.claim(V1, ids[:2], "run-a", ttl_s=3600, now=now) == {rid(1), rid(2)}
        assert wh.claim(V1, ids, "run-b", ttl_s=3600, now=now) == {rid(3)}  # a's stay a's
        assert wh.claim(V1, ids, "run-a", ttl_s=3600, now=now) == {rid(1), rid(2)}  # a retry keeps its own
        assert wh.claim(V2, ids[:1], "run-b", ttl_s=3600, now=now) == {rid(1)}  # per extractor version
        wh.load([ok(1)], [bad(2)], run("run-a"))  # loaded: the claims go in the same transaction
        assert sorted(wh.fetch("SELECT receipt_id, extractor_version, run_id FROM extraction_claims")) == \
            sorted([(rid(3), V1, "run-b"), (rid(1), V2, "run-b")])

    def test_an_expired_or_released_claim_can_be_taken_over(self, wh):
        now = dt.datetime(2026, 3, 2, 1, 0)
        assert wh.claim(V1, [rid(1), rid(2)], "killed-run", ttl_s=3600, now=now) == {rid(1), rid(2)}
        assert wh.claim(V1, [rid(1)], "next-run", ttl_s=3600, now=now + dt.timedelta(minutes=59)) == set()
        assert wh.claim(V1, [rid(1)], "next-run", ttl_s=3600, now=now + dt.timedelta(minutes=61)) == {rid(1)}
        wh.release_claims("killed-run")  # its failure callback
        assert wh.claim(V1, [rid(2)], "next-run", ttl_s=3600, now=now) == {rid(2)}
        assert wh.claim(V1, [], "next-run", ttl_s=3600) == set()


class TestDuckDBWarehouse(WarehouseContract):
    @pytest.fixture
    def open_wh(self, tmp_path):
        return lambda: open_warehouse(f"duckdb:///{tmp_path}/warehouse.duckdb")


def test_duckdb_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    w = open_warehouse("duckdb:///var/wh.duckdb")  # relative, like the default
    w.close()
    assert (tmp_path / "var" / "wh.duckdb").exists()
    w = open_warehouse("duckdb:///:memory:")
    w.ensure_schema()
    assert w.table_counts()["receipts"] == 0
    w.close()
    with pytest.raises(ValueError, match="unsupported warehouse URL"):
        open_warehouse("mysql://x")


def test_generated_ddl_types():
    assert ddl.sql_type_of(Receipt.model_fields["total"].annotation) == "NUMERIC(14,4)"
    assert ddl.sql_type_of(Receipt.model_fields["date"].annotation) == "DATE"
    assert ddl.sql_type_of(Receipt.model_fields["store_name"].annotation) == "TEXT"
    assert ddl.sql_type_of(Receipt.model_fields["confidence"].annotation) == "JSON"
    with pytest.raises(TypeError):
        ddl.sql_type_of(int | str)
    assert set(LineItem.model_fields) < set(ddl.LINE_ITEMS.column_names)
    pg = ddl.ddl("postgres")
    assert '"timings" JSONB' in pg and "JSONB" not in ddl.ddl("duckdb")
    assert 'PRIMARY KEY ("receipt_id", "extractor_version")' in pg
    assert "| `total` | NUMERIC(14,4) |" in ddl.markdown_tables()


def test_placeholder_conversion_leaves_literals_alone():
    assert convert_placeholders("a = ? AND b = '?' AND c = %s", "format") == "a = %s AND b = '?' AND c = %s"
    assert convert_placeholders("a = %s AND b = '%s'", "qmark") == "a = ? AND b = '%s'"


def test_postgres_uri_normalisation():
    assert normalise_uri("postgres://u:p@h:5432/db?__extra__=%7B%7D&sslmode=disable") == \
        "postgresql://u:p@h:5432/db?sslmode=disable"
    assert normalise_uri("postgresql+psycopg2://u@h/db") == "postgresql://u@h/db"


def test_docs_show_the_current_generated_tables():
    from pathlib import Path
    doc = (Path(__file__).parents[2] / "docs" / "warehouse.md").read_text(encoding="utf-8")
    assert ddl.markdown_tables() in doc, "regenerate: python -m extractor.pipeline.warehouse.ddl markdown"


def _hold_duckdb_file(path, seconds):
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
         "print('locked', flush=True); time.sleep(float(sys.argv[2])); con.close()",
         str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_duckdb_waits_for_another_process_holding_the_file(tmp_path):
    # DuckDB allows one writer process per file; parallel Airflow tasks must queue, not fail.
    import time

    path = tmp_path / "busy.duckdb"
    holder = _hold_duckdb_file(path, 1.5)
    t0 = time.monotonic()
    w = open_warehouse(f"duckdb:///{path}", lock_timeout_s=30)
    waited = time.monotonic() - t0
    holder.wait(timeout=30)
    w.ensure_schema()
    w.close()
    assert waited > 0.5  # it really waited for the other process

    holder = _hold_duckdb_file(path, 3)
    try:
        with pytest.raises(Exception, match="(?i)lock"):  # and gives up after the timeout
            open_warehouse(f"duckdb:///{path}", lock_timeout_s=0.2)
    finally:
        holder.kill()
        holder.wait()
