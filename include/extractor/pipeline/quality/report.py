"""The quality report: quality over time as PNG charts and one offline HTML page.

``write_report(warehouse, output_dir, days=N, end=day)`` reads the window from the
warehouse (``quality.history``) and writes, into ``output_dir``::

    index.html              the page (inline CSS, the charts beside it, nothing remote)
    receipts_per_day.png    receipts processed per day, stacked by extractor version
    quarantine_rate.png     quarantine rate, all reasons and the top ones, per version
    fill_rate.png           per-field fill rate, a panel per field, a line per version
    confidence.png          distribution of per-field confidence, per version
    throughput.png          receipts/s of extraction per day, per version
    report.json             the numbers behind the charts

Every time chart colours by extractor version and draws a dashed line where a version
first appears, so a model switch or a rollback reads as a step. matplotlib draws through
``Figure`` (the Agg canvas), never pyplot: no global backend, no display needed.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from extractor.pipeline.quality.history import History, load_history

CHARTS = {
    "receipts_per_day": "Receipts per day",
    "quarantine_rate": "Quarantine rate by reason",
    "fill_rate": "Field fill rate",
    "confidence": "Confidence distribution",
    "throughput": "Receipts per second (extraction)",
}
MAX_REASONS = 5  # panels besides "all reasons"
DPI = 90


def write_report(warehouse: Any, output_dir: str | os.PathLike, *, days: int = 30,
                 end: dt.date | None = None, data_docs_link: str | None = None) -> dict[str, Any]:
    """Build the charts and page for the ``days`` days ending at ``end`` (default: today,
    UTC); ``data_docs_link``: a relative link to the Data Docs index, shown on the page."""
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    end = end or dt.datetime.now(dt.UTC).date()
    history = load_history(warehouse, days=days, end=end)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    numbers = report_numbers(history)
    charts = {}
    for name, draw in (("receipts_per_day", _receipts_per_day), ("quarantine_rate", _quarantine_rate),
                       ("fill_rate", _fill_rate), ("confidence", _confidence),
                       ("throughput", _throughput)):
        charts[name] = str(_save(draw(history), out / f"{name}.png"))
    _write_text(out / "report.json", json.dumps(numbers, indent=1, sort_keys=True))
    page = out / "index.html"
    _write_text(page, render_page(history, numbers, data_docs_link))
    return {"page": str(page), "charts": charts, "runs": numbers["runs"],
            "versions": history.versions, "start": str(history.start), "end": str(history.end)}


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def report_numbers(history: History) -> dict[str, Any]:
    """Per-version totals and per-day figures (what the page's tables and report.json hold)."""
    versions = {}
    for version in history.versions:
        series = history.series(version)
        receipts = sum(c.receipts for _, c in series)
        quarantined = sum(c.quarantined for _, c in series)
        reasons: Counter = sum((c.reasons for _, c in series), Counter())
        speeds = [s for _, c in series for s in c.receipts_per_s]
        conf = history.confidences.get(version, [])
        versions[version] = {
            "first_day": str(series[0][0]), "last_day": str(series[-1][0]),
            "runs": sum(c.runs for _, c in series), "receipts": receipts,
            "loaded": sum(c.loaded for _, c in series), "quarantined": quarantined,
            "quarantine_rate": round(quarantined / receipts, 4) if receipts else None,
            "mean_receipts_per_s": round(sum(speeds) / len(speeds), 3) if speeds else None,
            "mean_confidence": round(sum(conf) / len(conf), 4) if conf else None,
            "reasons": dict(reasons.most_common()),
            "days": {str(day): {"receipts": c.receipts, "quarantined": c.quarantined,
                                "fill_rates": {k: round(v, 4) for k, v in c.fill_rates.items()}}
                     for day, c in series},
        }
    return {"start": str(history.start), "end": str(history.end),
            "runs": sum(v["runs"] for v in versions.values()), "versions": versions}


# ----------------------------------------------------------------------------- charts

def _figure(title: str, width: float = 9.0, height: float = 3.6, *, panels: bool = False):
    """A figure; ``panels`` (a grid of small charts) are laid out by hand, which is twice
    as fast as the constrained layout at 16 panels, with the legend below them."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout=None if panels else "constrained")
    fig.suptitle(title, fontsize=12)
    return fig


def _panels(fig, count: int, cols: int):
    rows = max(1, -(-count // cols))
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    inch = 1 / fig.get_figheight()
    fig.subplots_adjust(left=0.06, right=0.98, top=1 - 0.55 * inch, bottom=0.75 * inch,
                        hspace=0.45, wspace=0.12)
    for ax in axes[count:]:
        ax.set_visible(False)
    return axes


def _save(fig, path: Path) -> Path:
    """Write then rename: a page being read (or a second run redrawing) never sees half a PNG."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png", dpi=DPI)
    os.replace(tmp, path)
    return path


def _colours(history: History) -> dict[str, Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return {v: palette(i % 10) for i, v in enumerate(history.versions)}


def _version_switches(ax, history: History) -> None:
    """A dashed line on the day each later version first ran: switches and rollbacks."""
    for version in history.versions[1:]:
        ax.axvline(history.first_day[version], color="#888", linestyle="--", linewidth=0.8)


def _time_axes(ax, history: History, ylabel: str) -> None:
    half_day = dt.timedelta(hours=12)  # room for the first and last bars (date + 0.5 d is the date)
    ax.set_xlim(dt.datetime.combine(history.start, dt.time()) - half_day,
                dt.datetime.combine(history.end, dt.time()) + half_day)
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator(minticks=3, maxticks=7)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.tick_params(axis="x", labelsize=8)
    _version_switches(ax, history)


def _legend(fig, ax) -> None:
    """One legend below the plot (it never hides data), a column per version up to three."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=8, ncol=min(3, len(handles)),
                   loc="outside lower center" if fig.get_layout_engine() else "lower center")


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666")


def _short(version: str, limit: int = 48) -> str:
    return version if len(version) <= limit else version[: limit - 1] + "…"


def _receipts_per_day(history: History):
    fig = _figure(CHARTS["receipts_per_day"])
    ax = fig.add_subplot()
    colours, bottom = _colours(history), Counter()
    for version in history.versions:
        series = history.series(version)
        days = [d for d, _ in series]
        counts = [c.receipts for _, c in series]
        ax.bar(days, counts, bottom=[bottom[d] for d in days], color=colours[version],
               label=_short(version), width=0.8)
        bottom.update(dict(zip(days, counts, strict=True)))
    _time_axes(ax, history, "receipts")
    _legend(fig, ax)
    if not history.versions:
        _empty(ax, "no runs in this window")
    return fig


def reason_label(reason: str) -> str:
    """``validate: expect_column_values_to_be_between(total)`` -> ``validate: total not to be_between``."""
    m = re.match(r"validate: expect_column_(?:values|value_lengths)_to_(\w+)\((\w+)\)$", reason)
    return f"validate: {m.group(2)} fails {m.group(1)}" if m else reason


def _quarantine_rate(history: History):
    totals: Counter = Counter()
    for cell in history.cells.values():
        totals.update(cell.reasons)
    panels = ["all reasons"] + [r for r, _ in totals.most_common(MAX_REASONS)]
    fig = _figure(CHARTS["quarantine_rate"], width=11, height=2.3 * -(-len(panels) // 3) + 1.2,
                  panels=True)
    colours = _colours(history)
    axes = _panels(fig, len(panels), 3)
    for ax, reason in zip(axes, panels, strict=False):
        for version in history.versions:
            series = [(d, c) for d, c in history.series(version) if c.receipts]
            values = [(c.quarantined if reason == "all reasons" else c.reasons[reason]) / c.receipts
                      for _, c in series]
            ax.plot([d for d, _ in series], values, marker="o", markersize=3,
                    color=colours[version], label=_short(version))
        ax.set_title(reason_label(reason)[:60], fontsize=9)
        _time_axes(ax, history, "")
        ax.yaxis.set_major_formatter(_percent())
        ax.tick_params(labelsize=7)
    _legend(fig, axes[0])
    if not history.versions:
        _empty(axes[0], "no runs in this window")
    return fig


def _percent():
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=1.0, decimals=0)


def _fill_rate(history: History):
    fields = sorted({f for c in history.cells.values() for f in c.fill_rates})
    fig = _figure(CHARTS["fill_rate"], width=11, height=1.9 * max(1, -(-len(fields) // 4)) + 1.2,
                  panels=True)
    colours = _colours(history)
    axes = _panels(fig, max(1, len(fields)), 4)
    for ax, name in zip(axes, fields, strict=False):
        for version in history.versions:
            series = [(d, c.fill_rates[name]) for d, c in history.series(version) if name in c.fill_rates]
            ax.plot([d for d, _ in series], [v for _, v in series], marker="o", markersize=3,
                    color=colours[version], label=_short(version))
        ax.set_title(name, fontsize=9)
        ax.set_ylim(-0.05, 1.05)
        _time_axes(ax, history, "")
        ax.yaxis.set_major_formatter(_percent())
        ax.tick_params(labelsize=7)
    if not fields:
        _empty(axes[0], "no extracted receipts in this window")
    _legend(fig, axes[0])
    return fig


def _confidence(history: History):
    fig = _figure(CHARTS["confidence"])
    ax = fig.add_subplot()
    colours = _colours(history)
    drawn = False
    for version in history.versions:
        values = history.confidences.get(version) or []
        if values:
            ax.hist(values, bins=20, range=(0, 1), density=True, histtype="step", linewidth=1.6,
                    color=colours[version], label=f"{_short(version)} ({len(values)} values)")
            drawn = True
    ax.set_xlabel("per-field confidence of loaded receipts")
    ax.set_ylabel("density")
    ax.grid(alpha=0.3)
    _legend(fig, ax)
    if not drawn:
        _empty(ax, "no backend in this window recorded confidence")
    return fig


def _throughput(history: History):
    fig = _figure(CHARTS["throughput"])
    ax = fig.add_subplot()
    colours = _colours(history)
    for version in history.versions:
        points = [(d, s) for d, c in history.series(version) for s in c.receipts_per_s]
        ax.plot([d for d, _ in points], [s for _, s in points], marker="o", linestyle="",
                color=colours[version], label=_short(version))
    _time_axes(ax, history, "receipts / s")
    ax.set_ylim(bottom=0)
    _legend(fig, ax)
    if not any(c.receipts_per_s for c in history.cells.values()):
        _empty(ax, "no timed runs in this window")
    return fig


# ----------------------------------------------------------------------------- page

PAGE_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d2330;
max-width:1100px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 6px} .muted{color:#5e6675}
table{border-collapse:collapse;width:100%;margin:6px 0}
th,td{border-bottom:1px solid #dde1e8;padding:5px 8px;text-align:left} th{background:#f3f5f8}
td.num,th.num{text-align:right} code{font:12px ui-monospace,Menlo,Consolas,monospace}
figure{margin:10px 0 24px} figure img{max-width:100%;border:1px solid #dde1e8}
figcaption{color:#5e6675;font-size:13px}
"""

CAPTIONS = {
    "receipts_per_day": "Receipts each day's runs processed (loaded + quarantined), stacked by "
                        "extractor version. A gap is a day without a run.",
    "quarantine_rate": "Share of the day's receipts quarantined: all reasons, then the most "
                       "common reasons one panel each, a line per extractor version. A jump at a "
                       "dashed line (a version switch) points at the model, one without at the input.",
    "fill_rate": "Share of extracted receipts with each field filled, a line per extractor "
                 "version. A field dropping at a switch is what a new model lost.",
    "confidence": "Per-field confidence of the loaded receipts, per version (only backends "
                  "that report confidence appear).",
    "throughput": "Extraction speed of each run (receipts / s of the extract tasks).",
}


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def render_page(history: History, numbers: dict[str, Any], data_docs_link: str | None = None) -> str:
    rows = []
    for version, v in numbers["versions"].items():
        rate = "" if v["quarantine_rate"] is None else f"{v['quarantine_rate']:.1%}"
        rows.append(f"<tr><td><code>{_e(version)}</code></td><td>{_e(v['first_day'])} – "
                    f"{_e(v['last_day'])}</td><td class=num>{v['runs']}</td>"
                    f"<td class=num>{v['receipts']}</td><td class=num>{v['loaded']}</td>"
                    f"<td class=num>{v['quarantined']}</td><td class=num>{rate}</td>"
                    f"<td class=num>{_e(v['mean_receipts_per_s'])}</td>"
                    f"<td class=num>{_e(v['mean_confidence'])}</td></tr>")
    figures = [f'<figure><img src="{name}.png" alt="{_e(title)}"><figcaption>{_e(CAPTIONS[name])}'
               f"</figcaption></figure>" for name, title in CHARTS.items()]
    body = [
        "<h1>Receipt extraction: quality over time</h1>",
        f'<p class="muted">Partitions {history.start} – {history.end}: {numbers["runs"]} runs, '
        f'{len(numbers["versions"])} extractor versions.'
        + (f' Per-run detail: the <a href="{_e(data_docs_link)}">Data Docs</a>.' if data_docs_link
           else "") + "</p>",
        '<h2>Extractor versions</h2><table id="versions-table"><tr><th>version</th><th>days</th>'
        "<th class=num>runs</th><th class=num>receipts</th><th class=num>loaded</th>"
        "<th class=num>quarantined</th><th class=num>rate</th><th class=num>receipts/s</th>"
        "<th class=num>mean confidence</th></tr>" + "".join(rows) + "</table>",
        _reasons_table(numbers), *figures]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Receipt quality '
            f"report</title><style>{PAGE_STYLE}</style></head>\n<body>\n" + "\n".join(body)
            + "\n</body></html>\n")


def _reasons_table(numbers: dict[str, Any]) -> str:
    versions = list(numbers["versions"])
    totals: Counter = Counter()
    for v in numbers["versions"].values():
        totals.update(v["reasons"])
    if not totals:
        return "<h2>Quarantine reasons</h2><p>Nothing was quarantined in this window.</p>"
    head = "".join(f"<th class=num><code>{_e(_short(v, 28))}</code></th>" for v in versions)
    rows = "".join(
        f"<tr><td>{_e(reason_label(reason))}</td>" + "".join(
            f"<td class=num>{numbers['versions'][v]['reasons'].get(reason, 0)}</td>" for v in versions)
        + "</tr>" for reason, _ in totals.most_common())
    return (f'<h2>Quarantine reasons</h2><table id="reasons-table"><tr><th>reason</th>{head}</tr>'
            f"{rows}</table>")
