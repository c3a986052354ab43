"""The expectation suite, derived from the extraction schema.

``build_checks`` walks ``Receipt.model_fields`` and turns each field's type into the
checks that type implies (money -> non-negative and below a sanity maximum, date -> in
a window ending at the run's logical date, currency -> ISO 4217, text -> bounded
length ...), adds the configured required fields, and adds cross-field arithmetic
(totals, line items, tax rate) as precomputed boolean ``check_*`` columns, because
GX's ``UnexpectedRowsExpectation`` needs a SQL data source and ours is a DataFrame.

A check is plain data (GX class name + kwargs); ``validation`` turns it into a GX
expectation. Severity "error" quarantines the failing rows, "warn" only counts them,
"off" drops the check; ``Thresholds.severity`` overrides the defaults per check name.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from extractor.errors import ConfigError
from extractor.normalize import ISO_4217
from extractor.pipeline.warehouse.ddl import NUMERIC_LIMIT
from extractor.schema import MONEY_FIELDS, ExtractionResult, Receipt, scalar_fields

HH_MM = r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]$"
SHA256_HEX = r"^[0-9a-f]{64}(?:-p[0-9]+)?$"  # a page of a multi-page document: "<sha256>-p<n>"
CARD_LAST4 = r"^[0-9]{4}$"
PHONE = r"^\+?[0-9][0-9 ().\-/]{4,24}$"
FORMAT_CHECKED = {"time", "currency", "card_last4"}  # a format check bounds them already


@dataclass(frozen=True)
class Thresholds:
    """Suite settings and the quarantine-rate limits that decide pass / alert / fail."""

    max_quarantine_rate_alert: float = 0.2   # rate above this -> "alert"
    max_quarantine_rate_fail: float = 0.5    # rate above this -> "fail"
    min_rows: int = 0                        # fewer results than this -> "fail"
    date_window_days: int = 3650             # oldest acceptable date, back from logical date
    future_grace_days: int = 1               # dates up to logical date + this pass
    total_tolerance: Decimal = Decimal("0.05")
    line_items_tolerance: Decimal = Decimal("0.05")
    required_fields: tuple[str, ...] = ("store_name", "date", "total")
    max_amount: Decimal = Decimal("100000")  # sanity maximum for every money field
    max_tax_rate: Decimal = Decimal("30")
    max_text_length: int = 300
    allowed_currencies: tuple[str, ...] | None = None  # None: any ISO 4217 code
    severity: Mapping[str, str] = field(default_factory=dict)  # check name -> error/warn/off

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> Thresholds:
        """Build from JSON-ish config (an Airflow Variable); unknown keys are an error."""
        values = dict(values or {})
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(values) - set(names)
        if unknown:
            raise ConfigError(f"unknown validation thresholds: {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            default = names[key].default
            if isinstance(default, Decimal):
                value = Decimal(str(value))
            elif key in ("required_fields", "allowed_currencies") and value is not None:
                value = tuple(value)
            elif key == "severity":
                value = dict(value)
            elif isinstance(default, float):
                value = float(value)
            elif isinstance(default, int):
                value = int(value)
            kwargs[key] = value
        t = cls(**kwargs)
        if not 0 <= t.max_quarantine_rate_alert <= t.max_quarantine_rate_fail <= 1:
            raise ConfigError("need 0 <= max_quarantine_rate_alert <= max_quarantine_rate_fail <= 1")
        try:  # unknown required fields / check names / severities: fail at config time
            build_checks(t, dt.date(2000, 1, 1))
        except ValueError as exc:
            raise ConfigError(f"invalid validation thresholds: {exc}") from exc
        return t

    @classmethod
    def coerce(cls, value: Thresholds | Mapping[str, Any] | None) -> Thresholds:
        return value if isinstance(value, cls) else cls.from_dict(value)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Decimal) else list(v) if isinstance(v, tuple)
                    else dict(v) if isinstance(v, Mapping) else v) for k, v in out.items()}


@dataclass(frozen=True)
class Check:
    name: str          # stable id, used in severity overrides and stats
    expectation: str   # GX expectation class name
    column: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    severity: str = "error"
    description: str = ""

    @property
    def label(self) -> str:
        """What a quarantine row lists: the expectation and the column it ran on."""
        return f"{_snake(self.expectation)}({self.column})"


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def _base_type(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def build_checks(thresholds: Any, logical_date: dt.date) -> list[Check]:
    """The suite for one run; ``thresholds`` is a ``validation.Thresholds``."""
    checks = [*_identity_checks(thresholds), *_field_checks(thresholds, logical_date),
              *_format_checks(thresholds)]
    checks += [Check(name, "ExpectColumnValuesToBeInSet", name, {"value_set": [True]},
                     severity=severity, description=description)
               for name, description, severity in CROSS_FIELD]
    return _with_severity_overrides(checks, thresholds)


def _identity_checks(t: Any) -> list[Check]:
    """The receipt id (present, a sha256, unique in the batch) and the required fields."""
    checks: list[Check] = [
        Check("receipt_id_present", "ExpectColumnValuesToNotBeNull", "receipt_id",
              description="receipt_id is present"),
        Check("receipt_id_sha256", "ExpectColumnValuesToMatchRegex", "receipt_id",
              {"regex": SHA256_HEX}, description="receipt_id is a sha256 hex digest (+ -p<page>)"),
        Check("receipt_id_unique", "ExpectColumnValuesToBeUnique", "receipt_id",
              description="receipt_id appears once in the batch"),
    ]
    for name in t.required_fields:
        if name not in Receipt.model_fields:
            raise ValueError(f"required field {name!r} is not a Receipt field")
        checks.append(Check(f"{name}_present", "ExpectColumnValuesToNotBeNull", name,
                            description=f"{name} is present"))
    return checks


def _field_checks(t: Any, logical_date: dt.date) -> list[Check]:
    """One range or length check per scalar Receipt field, chosen by the field's type."""
    earliest = logical_date - dt.timedelta(days=t.date_window_days)
    latest = logical_date + dt.timedelta(days=t.future_grace_days)
    checks: list[Check] = []
    for name in scalar_fields():
        kind = _base_type(Receipt.model_fields[name].annotation)
        if kind is dt.date:
            checks.append(Check(
                f"{name}_in_window", "ExpectColumnValuesToBeBetween", name,
                {"min_value": dt.datetime.combine(earliest, dt.time()),
                 "max_value": dt.datetime.combine(latest, dt.time())},
                description=f"{name} between {earliest} and {latest} (not in the future)"))
        elif kind is Decimal and name in MONEY_FIELDS:
            checks.append(Check(
                f"{name}_in_range", "ExpectColumnValuesToBeBetween", name,
                {"min_value": 0, "max_value": float(t.max_amount)},
                description=f"{name} between 0 and {t.max_amount}"))
        elif kind is Decimal:  # rates
            checks.append(Check(
                f"{name}_in_range", "ExpectColumnValuesToBeBetween", name,
                {"min_value": 0, "max_value": float(t.max_tax_rate)},
                description=f"{name} between 0 and {t.max_tax_rate} percent"))
        elif kind is str and name not in FORMAT_CHECKED:
            checks.append(Check(
                f"{name}_length", "ExpectColumnValueLengthsToBeBetween", name,
                {"min_value": 1, "max_value": t.max_text_length},
                description=f"{name} at most {t.max_text_length} characters"))
    return checks


def _format_checks(t: Any) -> list[Check]:
    """Formats and code lists: time, currency, card digits, phone, a positive total."""
    currencies = sorted(t.allowed_currencies or ISO_4217)
    return [
        Check("time_format", "ExpectColumnValuesToMatchRegex", "time", {"regex": HH_MM},
              description="time is HH:MM (24 h)"),
        Check("currency_iso4217", "ExpectColumnValuesToBeInSet", "currency",
              {"value_set": currencies}, description="currency is a known ISO 4217 code"),
        Check("card_last4_digits", "ExpectColumnValuesToMatchRegex", "card_last4",
              {"regex": CARD_LAST4}, description="card_last4 is four digits"),
        Check("phone_format", "ExpectColumnValuesToMatchRegex", "phone", {"regex": PHONE},
              severity="warn", description="phone looks like a phone number"),
        Check("total_positive", "ExpectColumnValuesToBeBetween", "total",
              {"min_value": 0, "strict_min": True}, severity="warn",
              description="total is above zero"),
    ]


def _with_severity_overrides(checks: list[Check], t: Any) -> list[Check]:
    """The thresholds' severity per check applied; checks set to "off" dropped."""
    overrides = dict(t.severity)
    unknown = set(overrides) - {c.name for c in checks}
    if unknown:
        raise ValueError(f"severity override for unknown checks: {sorted(unknown)}")
    out = []
    for c in checks:
        severity = overrides.get(c.name, c.severity)
        if severity not in ("error", "warn", "off"):
            raise ValueError(f"severity of {c.name} must be error/warn/off, not {severity!r}")
        if severity != "off":
            out.append(Check(c.name, c.expectation, c.column, c.kwargs, severity, c.description))
    return out


# Cross-field rules: computed per row in Python (exact Decimal arithmetic, tolerances),
# checked by GX as boolean columns. A rule that cannot apply (fields missing) passes.
CROSS_FIELD = (
    ("check_total_arithmetic", "total = subtotal + tax - discount + tip (tax-inclusive "
     "subtotal accepted) within total_tolerance", "error"),
    ("check_line_items_sum", "line totals sum to the subtotal or total within "
     "line_items_tolerance", "error"),
    ("check_line_item_arithmetic", "quantity x unit_price = line_total on every line", "warn"),
    ("check_tax_rate_arithmetic", "tax_amount = subtotal x tax_rate within 2% or the "
     "tolerance", "warn"),
    ("check_amounts_fit_warehouse", "every amount (line items too) is below 10^10 in "
     "magnitude, the NUMERIC(14,4) limit", "error"),
    ("check_confidence_range", "every per-field confidence is within [0, 1]", "warn"),
)


def _close(a: Decimal, b: Decimal, tol: Decimal) -> bool:
    return abs(a - b) <= tol


def total_arithmetic_ok(r: Receipt, tol: Decimal) -> bool:
    if r.total is None or r.subtotal is None:
        return True
    adjust = (r.tip or 0) - (r.discount or 0)
    with_tax = r.subtotal + (r.tax_amount or 0) + adjust
    tax_inclusive = r.subtotal + adjust
    return _close(with_tax, r.total, tol) or _close(tax_inclusive, r.total, tol)


def line_items_sum_ok(r: Receipt, tol: Decimal) -> bool:
    totals = [i.line_total for i in r.line_items]
    if not totals or any(v is None for v in totals):
        return True
    s = sum(totals, Decimal(0))
    candidates = [r.subtotal, r.total]
    if r.total is not None:
        candidates.append(r.total - (r.tax_amount or 0) - (r.tip or 0) + (r.discount or 0))
    known = [c for c in candidates if c is not None]
    return not known or any(_close(s, c, tol) for c in known)


def line_item_arithmetic_ok(r: Receipt, tol: Decimal) -> bool:
    return all(_close(i.quantity * i.unit_price, i.line_total, tol)
               for i in r.line_items
               if None not in (i.quantity, i.unit_price, i.line_total))


def tax_rate_arithmetic_ok(r: Receipt, tol: Decimal) -> bool:
    if None in (r.tax_rate, r.tax_amount, r.subtotal):
        return True
    expected = r.subtotal * r.tax_rate / 100
    return _close(expected, r.tax_amount, max(tol, abs(expected) * Decimal("0.02")))


def amounts_fit_ok(r: Receipt) -> bool:
    values: Iterable[Decimal | None] = [getattr(r, n) for n in MONEY_FIELDS] + [r.tax_rate]
    values = list(values) + [v for i in r.line_items for v in (i.quantity, i.unit_price, i.line_total)]
    return all(v is None or (v.is_finite() and abs(v) < NUMERIC_LIMIT) for v in values)


def confidence_ok(r: Receipt) -> bool:
    return all(0.0 <= v <= 1.0 for v in r.confidence.values())


def cross_field_flags(result: ExtractionResult, thresholds: Any) -> dict[str, bool]:
    r = result.receipt or Receipt()
    if not amounts_fit_ok(r):  # NaN / huge values: arithmetic is meaningless, flag once
        flags = dict.fromkeys(name for name, _, _ in CROSS_FIELD)
        return {k: k != "check_amounts_fit_warehouse" for k in flags} | {
            "check_confidence_range": confidence_ok(r)}
    return {
        "check_total_arithmetic": total_arithmetic_ok(r, thresholds.total_tolerance),
        "check_line_items_sum": line_items_sum_ok(r, thresholds.line_items_tolerance),
        "check_line_item_arithmetic": line_item_arithmetic_ok(r, thresholds.line_items_tolerance),
        "check_tax_rate_arithmetic": tax_rate_arithmetic_ok(r, thresholds.total_tolerance),
        "check_amounts_fit_warehouse": amounts_fit_ok(r),
        "check_confidence_range": confidence_ok(r),
    }


def markdown_suite(thresholds: Any = None, logical_date: dt.date = dt.date(2024, 6, 30)) -> str:
    """The suite as a Markdown table (docs/validation.md embeds it; default thresholds)."""
    if thresholds is None:
        thresholds = Thresholds()
    rows = ["| check | GX expectation | column | severity | rule |", "| --- | --- | --- | --- | --- |"]
    for c in build_checks(thresholds, logical_date):
        rows.append(f"| `{c.name}` | {c.expectation} | `{c.column}` | {c.severity} | {c.description} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_suite())
