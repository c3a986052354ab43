"""One review item -> the human-in-the-loop form: subject, Markdown body, typed fields.

The fields are JSON-schema parameter specs (Airflow's ``Param`` takes them as keyword
arguments), prefilled with the model's values, so Airflow's form validates what a reviewer
types (a number where a number belongs, a date as YYYY-MM-DD). The body shows why the
receipt is here, the confidence per field, the raw model output and the image, which the
``receipts_review`` plugin endpoint serves (the form holds its URL, never the bytes).
"""

from __future__ import annotations

import datetime as dt
import typing
from decimal import Decimal
from typing import Any

from extractor.schema import Receipt, scalar_fields

OPTIONS = ("approve", "correct", "reject")
IMAGE_PATH = "/receipts-review/images/{receipt_id}"  # the plugin's endpoint, under Airflow's base path


def _base_type(name: str) -> Any:
    args = [a for a in typing.get_args(Receipt.model_fields[name].annotation) if a is not type(None)]
    return args[0] if args else Receipt.model_fields[name].annotation


def field_params(item: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Field name -> parameter spec (``default`` plus JSON-schema keywords)."""
    specs = {}
    for name in scalar_fields():
        value, kind = item["fields"].get(name), _base_type(name)
        spec: dict[str, Any] = {"title": name.replace("_", " "),
                                "description": Receipt.model_fields[name].description or ""}
        if kind is Decimal:
            spec.update(type=["null", "number"], default=None if value is None else float(value))
        elif kind is dt.date:
            spec.update(type=["null", "string"], format="date", default=value)
        else:
            spec.update(type=["null", "string"], default=value)
        specs[name] = spec
    return specs


def subject(item: dict[str, Any]) -> str:
    kind = "Quarantined" if item["origin"] == "quarantine" else "Low-confidence"
    store = item["fields"].get("store_name") or "unknown store"
    return f"{kind} receipt {item['receipt_id'][:12]} ({store}): check the fields"


def _cell(value: Any) -> str:
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def body(item: dict[str, Any], *, base_path: str = "") -> str:
    """Markdown: the reason, the image, the fields with their confidence, the raw output."""
    image = base_path.rstrip("/") + IMAGE_PATH.format(receipt_id=item["receipt_id"])
    confidence = item.get("confidence") or {}
    lines = [f"**Why this receipt is here:** {_cell(item['reason'])}", "",
             (f"Receipt `{item['receipt_id']}` from `{_cell(item['source'])}`, read by "
              f"`{_cell(item['extractor_version'])}`."), "",
             f"![receipt image]({image})", "",
             f"[Open the image in a new tab]({image})", "",
             "| field | model value | confidence |", "| --- | --- | ---: |"]
    for name in scalar_fields():
        score = confidence.get(name)
        shown = "" if score is None else f"{score:.3f}"
        lines.append(f"| {name} | {_cell(item['fields'].get(name))} | {shown} |")
    raw = item.get("raw_text")
    lines += ["", "**Raw model output:**", "", "```", (raw or "(none)").replace("```", "'''"), "```",
              "", ("Choose **approve** if the fields are right, **correct** after fixing them in "
                   "the form, **reject** if this is not a usable receipt.")]
    return "\n".join(lines)
