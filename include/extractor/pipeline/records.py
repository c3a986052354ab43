"""The small records that travel between validation, loading and alerting."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Stage = Literal["extract", "validate"]
Decision = Literal["pass", "alert", "fail"]


@dataclass
class QuarantineRecord:
    """A receipt that will not be loaded, and why.

    ``stage`` is "extract" when no receipt came out of the backend (bad image, unparseable
    model output) and "validate" when the receipt failed expectations.
    """

    receipt_id: str
    source: str
    extractor_version: str
    stage: Stage
    reason: str
    failed_expectations: list[str] = field(default_factory=list)
    raw_text: str | None = None
    receipt: dict[str, Any] | None = None  # the extracted fields (JSON-safe), if any
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunRecord:
    """Lineage of one pipeline run: written to ``runs`` and stamped on every row it loads."""

    run_id: str
    dag_id: str
    logical_date: dt.datetime | dt.date | None
    partition_start: dt.datetime | dt.date | None
    partition_end: dt.datetime | dt.date | None
    extractor_version: str
    model_id: str | None
    revision: str | None
    prompt_version: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    decision: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # see pipeline.summary
    extractor_origin: str | None = None  # 'setting' | 'param' | 'default' (see ddl.RUNS)
