"""Data Docs: the project's own static HTML, one page per run and an index of runs.

Rendered from the validation outcome, not by GX's site builder: GX's pages fetch
bootstrap, jquery and vega from CDNs (bare text on an air-gapped GPU worker), show the
cross-field checks as "values must belong to this set: True" and never see the
receipts quarantined at extraction. These pages need nothing but the folder they are in
(inline CSS, no script, no remote asset) and list every receipt of the run that did not
load, with its stage and reason.

Layout of the folder (``receipts_data_docs_dir``)::

    index.html               every run, newest first (rebuilt after each run)
    runs/<run>.html          one page per run
    runs/<run>.json          the run's summary line for the index (the details are in the
                             page and in the warehouse's quarantine table)
    report/index.html        the quality report over time (``quality.report``), when built

Re-running a run rewrites its page (same name), so the folder converges like the warehouse.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from extractor.pipeline.records import QuarantineRecord

RUNS_SUBDIR = "runs"
INDEX_FIELDS = ("run_id", "logical_date", "extractor_versions", "decision", "decision_reason",
                "counts", "quarantine_rate")
REPORT_SUBDIR = "report"
INDEX_NAME = "index.html"

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d2330}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
a{color:#1a5fb4} .muted{color:#5e6675}
table{border-collapse:collapse;width:100%;margin:6px 0}
th,td{border-bottom:1px solid #dde1e8;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f8;font-weight:600} td.num,th.num{text-align:right}
code{font:12px ui-monospace,Menlo,Consolas,monospace;background:#f3f5f8;padding:1px 3px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{border:1px solid #dde1e8;border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:20px}
.badge{display:inline-block;border-radius:4px;padding:1px 8px;font-weight:600;color:#fff}
.pass{background:#2e7d32} .alert{background:#c77700} .fail{background:#c62828} .none{background:#6b7280}
.stage-extract{color:#8e24aa;font-weight:600} .stage-validate{color:#c77700;font-weight:600}
tr.failed td{background:#fff4f2}
"""


def run_page_name(run_id: str) -> str:
    """File name of a run's page: readable, and unique even when two run ids differ
    only in characters a file name cannot hold."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._")[:80] or "run"
    return f"{readable}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}.html"


def docs_file(docs_dir: str | os.PathLike, path: str) -> Path | None:
    """The file a request path names inside the Data Docs folder, or None.

    ``runs/<page>.html`` and ``report/...`` are files; ``runs/<Airflow run id>`` (what the
    Airflow UI's run tab asks for) is mapped to that run's page. Nothing outside the
    folder is ever returned (``..``, absolute paths and links out are refused)."""
    root = Path(docs_dir).resolve()
    path = path.strip("/") or INDEX_NAME
    candidates = [root / path]
    if path.startswith(RUNS_SUBDIR + "/"):
        candidates.append(root / RUNS_SUBDIR / run_page_name(path[len(RUNS_SUBDIR) + 1:]))
    for candidate in candidates:
        resolved = candidate.resolve()
        if resolved.is_relative_to(root) and resolved.is_file():
            return resolved
        if resolved.is_relative_to(root) and (resolved / INDEX_NAME).is_file():
            return resolved / INDEX_NAME
    return None


def docs_record(stats: Mapping[str, Any], quarantined: Sequence[QuarantineRecord],
                extractor_versions: Iterable[str]) -> dict[str, Any]:
    """What a run's page shows, JSON-safe (kept beside the page for the index)."""
    return {
        "run_id": stats["run_id"], "logical_date": stats["logical_date"],
        "extractor_versions": sorted(set(extractor_versions)),
        "decision": stats["decision"], "decision_reason": stats["decision_reason"],
        "counts": {k: stats[k] for k in ("rows", "validated", "valid", "quarantined",
                                         "extract_failed", "validation_failed")},
        "quarantine_rate": stats["quarantine_rate"],
        "checks": list(stats["checks"]),
        "quarantined": [{"receipt_id": q.receipt_id, "source": q.source, "stage": q.stage,
                         "reason": q.reason, "failed_expectations": list(q.failed_expectations)}
                        for q in sorted(quarantined, key=lambda q: (q.stage != "extract", q.source))],
        "thresholds": stats.get("thresholds", {}),
    }


def write_run_docs(docs_dir: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Write the run's page (and its JSON), rebuild the index; returns the page's path."""
    root = Path(docs_dir)
    runs = root / RUNS_SUBDIR
    runs.mkdir(parents=True, exist_ok=True)
    page = runs / run_page_name(record["run_id"])
    # the index reads every run's JSON on each rebuild: only the few fields it shows
    summary = {k: record[k] for k in INDEX_FIELDS if k in record}
    _write_atomic(page.with_suffix(".json"), json.dumps(summary, indent=1, sort_keys=True, default=str))
    _write_atomic(page, render_run_page(record))
    write_index(root)
    return page


def write_index(docs_dir: str | os.PathLike) -> Path:
    """Rebuild ``index.html`` from every run's JSON in the folder."""
    root = Path(docs_dir)
    records = []
    for path in sorted((root / RUNS_SUBDIR).glob("*.json")):
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:  # one broken file must not hide the others
            records.append({"run_id": f"(unreadable: {path.name}: {exc})", "decision": None})
    records.sort(key=lambda r: (str(r.get("logical_date") or ""), r["run_id"]), reverse=True)
    has_report = (root / REPORT_SUBDIR / INDEX_NAME).exists()
    index = root / INDEX_NAME
    _write_atomic(index, render_index(records, has_report=has_report))
    return index


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- rendering

def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _document(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


def _badge(decision: str | None) -> str:
    css = decision if decision in ("pass", "alert", "fail") else "none"
    return f'<span class="badge {css}">{_e(decision or "unknown")}</span>'


def render_run_page(record: Mapping[str, Any]) -> str:
    c = record["counts"]
    cards = [("receipts", c["rows"]), ("valid, loaded", c["valid"]),
             ("quarantined at extraction", c["extract_failed"]),
             ("quarantined at validation", c["validation_failed"]),
             ("quarantine rate", f"{record['quarantine_rate']:.1%}")]
    body = [
        f'<p><a href="../{INDEX_NAME}">&larr; all runs</a></p>',
        f"<h1>Run <code>{_e(record['run_id'])}</code> {_badge(record['decision'])}</h1>",
        (f'<p class="muted">partition {_e(record["logical_date"])} &middot; extractor '
         f'{", ".join(f"<code>{_e(v)}</code>" for v in record["extractor_versions"]) or "none"}'
         f" &middot; {_e(record['decision_reason'])}</p>"),
        '<div class="cards">' + "".join(f'<div class="card"><b>{_e(v)}</b>{_e(k)}</div>'
                                         for k, v in cards) + "</div>",
        _quarantine_table(record["quarantined"]),
        _checks_table(record["checks"], c["validated"]),
        ("<h2>Thresholds</h2><details><summary>settings this run was judged by</summary>"
         f"<pre>{_e(json.dumps(record.get('thresholds', {}), indent=1, sort_keys=True))}</pre></details>"),
    ]
    return _document(f"receipts run {record['run_id']}", "\n".join(body))


def _quarantine_table(rows: Sequence[Mapping[str, Any]]) -> str:
    head = f'<h2 id="quarantine">Receipts not loaded ({len(rows)})</h2>'
    if not rows:
        return head + "<p>Every receipt of this run was loaded.</p>"
    out = [head, ('<table id="quarantine-table"><tr><th>#</th><th>source</th><th>stage</th>'
                  "<th>reason</th><th>receipt id</th></tr>")]
    for i, q in enumerate(rows, 1):
        name = str(q["source"]).rsplit("/", 1)[-1]
        out.append(f'<tr class="quarantine-row"><td class="num">{i}</td>'
                   f'<td title="{_e(q["source"])}">{_e(name)}</td>'
                   f'<td class="stage-{_e(q["stage"])}">{_e(q["stage"])}</td>'
                   f"<td>{_e(q['reason'])}</td><td><code>{_e(q['receipt_id'][:12])}</code></td></tr>")
    return "\n".join(out) + "</table>"


def _checks_table(checks: Sequence[Mapping[str, Any]], validated: int) -> str:
    head = f"<h2>Checks ({validated} receipts validated)</h2>"
    if not checks:
        return head + "<p>No receipt reached validation in this run.</p>"
    out = [head, ('<table id="checks-table"><tr><th>rule</th><th>check</th><th>column</th>'
                  '<th>severity</th><th class="num">failing receipts</th></tr>')]
    for ch in sorted(checks, key=lambda ch: bool(ch["success"])):  # failing checks first
        failed = ' class="failed"' if not ch["success"] else ""
        out.append(f"<tr{failed}><td>{_e(ch.get('description') or ch['expectation'])}</td>"
                   f"<td><code>{_e(ch['check'])}</code></td><td><code>{_e(ch['column'])}</code></td>"
                   f"<td>{_e(ch['severity'])}</td>"
                   f'<td class="num">{_e(ch["unexpected_count"])} of {validated}</td></tr>')
    return "\n".join(out) + "</table>"


def render_index(records: Sequence[Mapping[str, Any]], *, has_report: bool = False) -> str:
    body = ["<h1>Receipt extraction: Data Docs</h1>",
            f'<p class="muted">{len(records)} runs, newest first.'
            + (f' Quality over time: <a href="{REPORT_SUBDIR}/{INDEX_NAME}">the quality report</a>.'
               if has_report else "") + "</p>",
            ('<table id="runs-table"><tr><th>run</th><th>partition</th><th>extractor</th>'
             '<th class="num">receipts</th><th class="num">loaded</th><th class="num">quarantined'
             '</th><th class="num">rate</th><th>decision</th></tr>')]
    for r in records:
        c = r.get("counts") or {}
        rate = r.get("quarantine_rate")
        body.append(
            f'<tr class="run-row"><td><a href="{RUNS_SUBDIR}/{_e(run_page_name(r["run_id"]))}">'
            f"{_e(r['run_id'])}</a></td><td>{_e(r.get('logical_date'))}</td>"
            f"<td>{'<br>'.join(f'<code>{_e(v)}</code>' for v in r.get('extractor_versions') or [])}</td>"
            f'<td class="num">{_e(c.get("rows"))}</td><td class="num">{_e(c.get("valid"))}</td>'
            f'<td class="num">{_e(c.get("quarantined"))}</td>'
            f'<td class="num">{"" if rate is None else f"{rate:.1%}"}</td>'
            f"<td>{_badge(r.get('decision'))}</td></tr>")
    body.append("</table>")
    return _document("receipts Data Docs", "\n".join(body))
