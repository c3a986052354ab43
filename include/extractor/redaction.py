"""Keep credentials out of text that travels: log lines, exception messages, XCom, alerts.

A warehouse or object-store URL may carry a password (``postgresql://user:pw@host/db``),
and a mistyped one (``postgresq://...``) ends up verbatim in an error message unless
every place that formats it redacts it first. This module is the library's redactor
(framework-free, so the CLI and tests use it too):

* ``redact_url(url)``: one URL with its password replaced by ``***``;
* ``redact_text(text, secrets=())``: every ``scheme://user:password@`` in free text, every
  libpq ``password=...`` pair, and every known secret value;
* ``redact(value, secrets=())``: the same over nested dicts / lists (alert details);
* ``url_secrets(url)``: the password of a URL (and the URL itself), for a secrets masker.

Inside Airflow tasks the pipeline also registers these values with Airflow's own secrets
masker (``airflow.sdk.log.mask_secret``), which redacts the task log as it is written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

MASK = "***"
# scheme://user:password@  (scheme as RFC 3986 allows, typos included: "postgresq")
_URL_AUTH = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*:)(?P<pw>[^\s'\"]*)@")
# libpq key/value connection strings and query parameters: password=..., passwd=...
_KEY_VALUE = re.compile(r"(?P<key>\b(?:password|passwd|pwd|secret|token|api_key)\s*=\s*)"
                        r"(?P<value>'[^']*'|\"[^\"]*\"|[^\s&;,'\"]+)", re.IGNORECASE)
# The password may hold '/' or '@' unencoded (a sloppy AWS secret key): it runs to the last '@'
# of the token, so an odd path with an '@' after a port is over-redacted, never under-redacted.
MIN_SECRET_LENGTH = 4  # shorter values would redact ordinary words


def redact_url(url: str) -> str:
    """``url`` with the password of its authority replaced by ``***`` (the rest kept)."""
    return redact_text(url)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Free text with URL passwords, ``password=`` pairs and the given secrets masked."""
    if not text:
        return text
    text = _URL_AUTH.sub(lambda m: m["head"] + MASK + "@" if m["pw"] else m[0], text)
    text = _KEY_VALUE.sub(lambda m: m["key"] + MASK, text)
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len,
                         reverse=True):
        text = text.replace(secret, MASK)
    return text


def redact(value: Any, secrets: Iterable[str] = ()) -> Any:
    """``redact_text`` applied to every string inside dicts, lists and tuples."""
    secrets = tuple(secrets)
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {redact(k, secrets): redact(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v, secrets) for v in value)
    return value


def url_secrets(url: str | None) -> list[str]:
    """What a masker must hide for ``url``: its password (raw and percent-decoded).
    Empty when the URL has no password or cannot be parsed."""
    if not url:
        return []
    try:
        password = urlsplit(url).password
    except ValueError:  # e.g. an unbalanced IPv6 bracket: fall back to the pattern
        match = _URL_AUTH.search(url)
        password = match["pw"] if match else None
    if not password:
        return []
    return sorted({password, unquote(password)})
