"""Credentials never travel: URL passwords, libpq password= pairs and known secrets are masked."""

import pytest

from extractor.redaction import redact, redact_text, redact_url, url_secrets


@pytest.mark.parametrize("text, expected", [
    ("postgresq://user:pw-1234@127.0.0.1/db", "postgresq://user:***@127.0.0.1/db"),  # the typo of the issue
    ("unsupported URL 'postgresql://u:p@ss@h:5/db?sslmode=require' here",
     "unsupported URL 'postgresql://u:***@h:5/db?sslmode=require' here"),  # an unencoded @ in the password
    ("s3://AKIAXYZ:secret/key@bucket/prefix", "s3://AKIAXYZ:***@bucket/prefix"),
    ("host=db password=hunter22 dbname=x", "host=db password=*** dbname=x"),
    ("?user=u&password=abc123&sslmode=require", "?user=u&password=***&sslmode=require"),
    ("postgresql://user@h/db", "postgresql://user@h/db"),        # no password: unchanged
    ("duckdb:///var/warehouse.duckdb", "duckdb:///var/warehouse.duckdb"),
    ("http://localhost:8080/dags/x/runs/y", "http://localhost:8080/dags/x/runs/y"),
])
def test_redact_text(text, expected):
    assert redact_text(text) == expected


def test_known_secrets_and_nested_values():
    value = {"error": "auth failed for s3cr3t-token", "list": ["postgresql://a:b1@h/d", 3], "n": None}
    assert redact(value, ["s3cr3t-token"]) == {"error": "auth failed for ***",
                                               "list": ["postgresql://a:***@h/d", 3], "n": None}
    assert redact_text("abc and abcdef", ["abc"]) == "abc and abcdef"  # too short to mask safely


def test_url_secrets_and_redact_url():
    assert url_secrets("postgresql://u:p%40ss@h/db") == ["p%40ss", "p@ss"]
    assert url_secrets("postgresql://u:CANARYpw@[bad/db") == ["CANARYpw"]  # unparseable: pattern fallback
    assert url_secrets("postgresql://u@h/db") == [] and url_secrets(None) == []
    assert redact_url("postgresql://u:p@h/db") == "postgresql://u:***@h/db"


def test_a_malformed_postgres_url_does_not_echo_its_password():
    """libpq quotes a token it cannot parse (here the password, with a stray %); the warehouse
    re-raises its error redacted, same type."""
    import psycopg

    from extractor.pipeline.warehouse import open_warehouse

    with pytest.raises(psycopg.ProgrammingError) as err:
        open_warehouse("postgresql://postgres:CANARY%zz-pw@127.0.0.1:5432/db")
    assert str(err.value).strip() == 'invalid percent-encoded token: "***"'
    assert err.value.__context__ is None and err.value.__cause__ is None
    with pytest.raises(ValueError) as err:
        open_warehouse("postgresq://postgres:CANARY-pw-1@127.0.0.1/db")
    assert str(err.value).startswith("unsupported warehouse URL 'postgresq://postgres:***@127.0.0.1/db'")
