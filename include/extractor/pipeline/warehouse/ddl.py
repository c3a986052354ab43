"""Warehouse tables, generated from the extraction schema.

``Receipt.model_fields`` decides the columns of ``receipts`` and ``LineItem.model_fields``
those of ``receipt_line_items``; add a field to the schema and the next
``ensure_schema()`` adds the column (additive migration, never a drop). Lineage and
bookkeeping columns are declared here. One definition serves both dialects: only the
JSON type differs (DuckDB ``JSON``, PostgreSQL ``JSONB``).

Print the DDL with ``python -m extractor.pipeline.warehouse.ddl [duckdb|postgres]``.
"""

from __future__ import annotations

import datetime as dt
import sys
import types
import typing
from dataclasses import dataclass
from decimal import Decimal

from extractor.schema import LineItem, Receipt, scalar_fields

# Money and quantities: 10 integer digits, 4 decimals (fractional unit prices, rates).
NUMERIC = "NUMERIC(14,4)"
NUMERIC_LIMIT = Decimal("1e10")  # |value| must stay below this to fit NUMERIC(14,4)

_PY_TO_SQL = {
    str: "TEXT",
    Decimal: NUMERIC,
    dt.date: "DATE",
    dt.datetime: "TIMESTAMP",
    float: "DOUBLE PRECISION",
    int: "BIGINT",
    bool: "BOOLEAN",
    dict: "JSON",
    list: "JSON",
}


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str  # dialect-neutral; "JSON" becomes JSONB on PostgreSQL
    not_null: bool = False
    doc: str = ""

    def render(self, dialect: str) -> str:
        sql_type = "JSONB" if self.sql_type == "JSON" and dialect == "postgres" else self.sql_type
        return f'"{self.name}" {sql_type}' + (" NOT NULL" if self.not_null else "")


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    doc: str = ""

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def create_sql(self, dialect: str) -> str:
        body = [c.render(dialect) for c in self.columns]
        body.append("PRIMARY KEY (" + ", ".join(f'"{k}"' for k in self.primary_key) + ")")
        return f'CREATE TABLE IF NOT EXISTS "{self.name}" (\n    ' + ",\n    ".join(body) + "\n)"


def sql_type_of(annotation: object) -> str:
    """Map a pydantic field annotation (``Decimal | None``, ``dict[str, float]``...) to SQL."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"cannot map union {annotation!r} to one column type")
        return sql_type_of(args[0])
    if origin is typing.Literal:
        return "TEXT"
    base = origin or annotation
    for py_type, sql in _PY_TO_SQL.items():
        if base is py_type:
            return sql
    raise TypeError(f"no SQL type for {annotation!r}; extend ddl._PY_TO_SQL")


def _schema_columns(model: type, names: list[str]) -> list[Column]:
    return [Column(n, sql_type_of(model.model_fields[n].annotation),
                   doc=model.model_fields[n].description or "") for n in names]


KEY = (Column("receipt_id", "TEXT", True, "sha256 of the image bytes"),
       Column("extractor_version", "TEXT", True, "backend:model_id@revision:prompt_version"))
LINEAGE = (
    Column("model_id", "TEXT", doc="model that produced the row"),
    Column("revision", "TEXT", doc="model revision (commit/tag)"),
    Column("prompt_version", "TEXT", doc="prompt / parser version"),
    Column("run_id", "TEXT", True, "Airflow run that wrote the row"),
    Column("loaded_at", "TIMESTAMP", True, "the run's start (UTC), not now(): re-runs are identical"),
)

RECEIPTS = Table(
    "receipts",
    KEY + tuple(_schema_columns(Receipt, scalar_fields())) + (
        Column("line_item_count", "INTEGER", True, "rows in receipt_line_items"),
        Column("confidence", "JSON", doc=Receipt.model_fields["confidence"].description or ""),
        Column("source", "TEXT", True, "where the image came from"),
        Column("raw_text", "TEXT", doc="raw model / OCR output"),
        Column("timings", "JSON", doc="per-stage seconds for this receipt"),
    ) + LINEAGE + (
        Column("needs_review", "BOOLEAN", doc="loaded, but a required field's confidence was below "
               "the review threshold: a person checks it in `receipts_review`"),
        Column("review_reason", "TEXT", doc="why the receipt needs review (fields and confidences)"),
    ),
    ("receipt_id", "extractor_version"),
    "one validated receipt per (receipt_id, extractor_version)",
)

LINE_ITEMS = Table(
    "receipt_line_items",
    KEY + (Column("line_no", "INTEGER", True, "1-based position on the receipt"),)
    + tuple(_schema_columns(LineItem, list(LineItem.model_fields)))
    + (Column("run_id", "TEXT", True, "Airflow run that wrote the row"),),
    ("receipt_id", "extractor_version", "line_no"),
    "line items of the receipts in `receipts`; replaced together with their receipt",
)

QUARANTINE = Table(
    "quarantine",
    KEY + (
        Column("stage", "TEXT", True, "'extract' (no receipt) or 'validate' (failed expectations)"),
        Column("reason", "TEXT", True, "why the receipt was not loaded"),
        Column("failed_expectations", "JSON", True, "list of 'expectation(column)' strings"),
        Column("receipt", "JSON", doc="the extracted fields, when there were any"),
        Column("source", "TEXT", True, "where the image came from"),
        Column("raw_text", "TEXT", doc="raw model / OCR output"),
        Column("timings", "JSON", doc="per-stage seconds for this receipt"),
    ) + LINEAGE[:4] + (Column("quarantined_at", "TIMESTAMP", True, "the run's start (UTC)"),),
    ("receipt_id", "extractor_version"),
    "receipts that were not loaded, with the reason; a receipt is here or in `receipts`, never both",
)

RUNS = Table(
    "runs",
    (Column("run_id", "TEXT", True, "Airflow run id"),
     Column("dag_id", "TEXT"),
     Column("logical_date", "TIMESTAMP"),
     Column("partition_start", "TIMESTAMP", doc="data interval start (UTC)"),
     Column("partition_end", "TIMESTAMP", doc="data interval end (UTC)"),
     Column("extractor_version", "TEXT", True),
     Column("model_id", "TEXT"),
     Column("revision", "TEXT"),
     Column("prompt_version", "TEXT"),
     Column("started_at", "TIMESTAMP"),
     Column("finished_at", "TIMESTAMP"),
     Column("counts", "JSON", doc="discovered / loaded / quarantined / failed ..."),
     Column("timings", "JSON", doc="seconds per pipeline stage"),
     Column("decision", "TEXT", doc="validation decision: pass / alert / fail"),
     Column("summary", "JSON", doc="run summary: fill rates, throughput, validation stats"),
     Column("extractor_origin", "TEXT", doc="where the run's extractor came from: 'setting' (the "
            "Variable / env), 'param' (a DAG-run override, e.g. a comparison backfill) or 'default'")),
    ("run_id",),
    "one row per pipeline run (re-running a run replaces its row)",
)

ALERTS = Table(
    "alerts",
    (Column("alert_id", "TEXT", True, "random id; alerts are events, never replaced"),
     Column("run_id", "TEXT"),
     Column("level", "TEXT", True, "info / warning / error"),
     Column("message", "TEXT", True),
     Column("details", "JSON"),
     Column("notified", "JSON", doc="per-notifier outcome: 'ok' or the error"),
     Column("created_at", "TIMESTAMP", True, "UTC")),
    ("alert_id",),
    "every alert the pipeline raised, whether or not a notifier delivered it",
)

CLAIMS = Table(
    "extraction_claims",
    KEY + (Column("run_id", "TEXT", True, "the run extracting the receipt now"),
           Column("claimed_at", "TIMESTAMP", True, "wall-clock UTC"),
           Column("expires_at", "TIMESTAMP", True, "after this another run may take it over "
                  "(a run killed before its failure callback ran)")),
    ("receipt_id", "extractor_version"),
    "receipts a run has discovered and not yet loaded: another run of the same day skips them "
    "(see sources/claims.py); the load and a failed run's callback delete them",
)

REVIEW_DECISIONS = ("approve", "correct", "reject")

CORRECTIONS = Table(
    "corrections",
    KEY + (
        Column("decision", "TEXT", True, "the reviewer's answer: " + " / ".join(REVIEW_DECISIONS)),
    ) + tuple(_schema_columns(Receipt, scalar_fields())) + (
        Column("corrected_fields", "JSON", True, "names of the fields the reviewer changed"),
        Column("reviewer", "TEXT", doc="Airflow user who answered the review form"),
        Column("reviewed_at", "TIMESTAMP", True, "when the answer was given (UTC)"),
        Column("review_reason", "TEXT", doc="why the receipt was sent to review"),
        Column("source", "TEXT", True, "where the image came from"),
        Column("review_run_id", "TEXT", True, "the `receipts_review` run that asked"),
    ),
    ("receipt_id", "extractor_version"),
    "one review answer per model output (receipt_id, extractor_version); the field columns hold "
    "the values the reviewer submitted (for 'reject': the model's, unchanged). The model's row "
    "in `receipts` / `quarantine` is never changed",
)

TABLES: tuple[Table, ...] = (RECEIPTS, LINE_ITEMS, QUARANTINE, RUNS, ALERTS, CLAIMS, CORRECTIONS)

# The active extractor version: that of the latest finished run whose extractor came from
# the setting (not a DAG-run override such as a comparison backfill) and did not fail.
_ACTIVE_VERSION = """SELECT "extractor_version" AS version FROM "runs"
        WHERE "decision" IS DISTINCT FROM 'fail' AND "extractor_origin" IS DISTINCT FROM 'param'
        ORDER BY "finished_at" DESC NULLS LAST, "started_at" DESC NULLS LAST LIMIT 1"""


@dataclass(frozen=True)
class View:
    name: str
    sql: str | typing.Callable[[str], str]  # the SELECT, or a function of the dialect giving it
    doc: str = ""

    def create_sql(self, dialect: str) -> str:
        sql = self.sql(dialect) if callable(self.sql) else self.sql
        return f'CREATE OR REPLACE VIEW "{self.name}" AS\n{sql}'


# What receipts_current adds after the columns of `receipts`: where the field values come
# from ('model' or 'reviewer') and the review answer, if any.
REVIEW_VIEW_COLUMNS = ("values_from", "review_decision", "reviewed_by", "reviewed_at")
_ACCEPTED = "('approve', 'correct')"  # answers whose field values replace the model's


def _receipts_current_sql(dialect: str) -> str:
    """One row per receipt; a reviewer's accepted values replace the model's field by field
    (all of them: a reviewer may also clear a field), a rejection only marks the row. A
    receipt that was quarantined and then accepted by a reviewer appears from its correction."""
    fields = set(scalar_fields())
    loaded, reviewed_only = [], []
    for c in RECEIPTS.columns:
        cast = c.render(dialect).split(" ", 1)[1].replace(" NOT NULL", "")
        if c.name in fields:
            loaded.append(f'CASE WHEN v."decision" IN {_ACCEPTED} THEN v."{c.name}" '
                          f'ELSE r."{c.name}" END AS "{c.name}"')
            reviewed_only.append(f'v."{c.name}"')
        elif c.name in ("receipt_id", "extractor_version", "source"):
            loaded.append(f'r."{c.name}"')
            reviewed_only.append(f'v."{c.name}"')
        else:
            loaded.append(f'r."{c.name}"')
            reviewed_only.append(f'CAST(NULL AS {cast}) AS "{c.name}"')
    review = ('v."decision" AS "review_decision", v."reviewer" AS "reviewed_by", '
              'v."reviewed_at" AS "reviewed_at"')
    return f"""WITH active AS (
    {_ACTIVE_VERSION}
), ranked AS (
    SELECT r."receipt_id", r."extractor_version", ROW_NUMBER() OVER (
        PARTITION BY r."receipt_id"
        ORDER BY (r."extractor_version" = a.version) IS TRUE DESC,
                 u."extractor_origin" IS DISTINCT FROM 'param' DESC,
                 r."loaded_at" DESC, r."extractor_version" DESC) AS version_rank
    FROM "receipts" r LEFT JOIN active a ON TRUE LEFT JOIN "runs" u ON u."run_id" = r."run_id"
), latest_review AS (
    SELECT c.*, ROW_NUMBER() OVER (PARTITION BY c."receipt_id"
                                   ORDER BY c."reviewed_at" DESC, c."extractor_version" DESC) AS review_rank
    FROM "corrections" c
)
SELECT (r."extractor_version" = a.version) IS TRUE AS "is_active_version",
    {", ".join(loaded)},
    CASE WHEN v."decision" IN {_ACCEPTED} THEN 'reviewer' ELSE 'model' END AS "values_from", {review}
FROM "receipts" r
JOIN ranked b ON b."receipt_id" = r."receipt_id" AND b."extractor_version" = r."extractor_version"
    AND b.version_rank = 1
LEFT JOIN active a ON TRUE
LEFT JOIN latest_review v ON v."receipt_id" = r."receipt_id" AND v.review_rank = 1
UNION ALL
SELECT FALSE, {", ".join(reviewed_only)}, 'reviewer', {review}
FROM latest_review v
WHERE v.review_rank = 1 AND v."decision" IN {_ACCEPTED}
    AND NOT EXISTS (SELECT 1 FROM "receipts" r WHERE r."receipt_id" = v."receipt_id")"""


RECEIPTS_CURRENT = View(
    "receipts_current",
    _receipts_current_sql,
    "one row per receipt: its row from the active extractor version (that of the latest "
    "finished run that used the setting, not a DAG-run override, and did not fail), else its "
    "most recently loaded row, rows of override runs last. `is_active_version` tells which. "
    "Where a reviewer approved or corrected the receipt (`corrections`, latest answer), the "
    "field columns hold the reviewer's values and `values_from` is 'reviewer', else 'model'; "
    "a rejected receipt keeps the model's values with `review_decision` = 'reject'. A "
    "quarantined receipt a reviewer accepted appears too (model-only columns NULL). The "
    "other columns are those of `receipts`, then `review_decision`, `reviewed_by`, "
    "`reviewed_at`; join `receipt_line_items` on (`receipt_id`, `extractor_version`)",
)

VIEWS: tuple[View, ...] = (RECEIPTS_CURRENT,)


def ddl(dialect: str = "duckdb") -> str:
    """All CREATE TABLE statements for a dialect ('duckdb' or 'postgres')."""
    return ";\n\n".join([t.create_sql(dialect) for t in TABLES]
                          + [v.create_sql(dialect) for v in VIEWS]) + ";\n"


def markdown_tables() -> str:
    """The tables and columns as Markdown (docs/warehouse.md embeds this output)."""
    out = []
    for t in TABLES:
        out.append(f"### `{t.name}`\n\n{t.doc}. Primary key: "
                   + ", ".join(f"`{k}`" for k in t.primary_key) + ".\n")
        out.append("| column | type | null | description |\n| --- | --- | --- | --- |")
        for c in t.columns:
            out.append(f"| `{c.name}` | {c.sql_type} | {'no' if c.not_null else 'yes'} | {c.doc} |")
        out.append("")
    for v in VIEWS:
        out.append(f"### `{v.name}` (view)\n\n{v.doc}.\n")
    return "\n".join(out)


if __name__ == "__main__":
    arg = sys.argv[1] if len(sys.argv) > 1 else "duckdb"
    print(markdown_tables() if arg == "markdown" else ddl(arg))
