"""Alert notifiers built from Airflow connections (plugins/receipts_notifiers.py): the smtp
provider's SmtpNotifier delivers to a real SMTP server (a sink on 127.0.0.1); without
connections there are no notifiers (the log line and alerts row remain)."""

from __future__ import annotations

import json
import threading

import pytest


@pytest.fixture
def smtp_sink():
    import asyncore
    import smtpd  # stdlib in Python 3.11: a real SMTP server, enough for a local sink

    received: list[dict] = []

    class Sink(smtpd.SMTPServer):
        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            received.append({"from": mailfrom, "to": rcpttos, "data": data.decode(errors="replace")})

    server = Sink(("127.0.0.1", 0), None)
    port = server.socket.getsockname()[1]
    thread = threading.Thread(target=asyncore.loop, kwargs={"timeout": 0.05}, daemon=True)
    thread.start()
    yield port, received
    server.close()
    thread.join(timeout=5)


def test_no_connections_no_notifiers(monkeypatch, airflow_db):
    import receipts_notifiers

    monkeypatch.delenv("AIRFLOW_CONN_RECEIPTS_SMTP", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_RECEIPTS_SLACK", raising=False)
    assert receipts_notifiers.build_notifiers() == []


def test_smtp_notifier_sends_the_alert(monkeypatch, smtp_sink, airflow_db):
    import receipts_notifiers

    port, received = smtp_sink
    monkeypatch.setenv("AIRFLOW_CONN_RECEIPTS_SMTP", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": port,
        "extra": {"to": "data-oncall@example.com", "from_email": "pipeline@example.com",
                  "disable_tls": True, "disable_ssl": True, "timeout": 5, "retry_limit": 1}}))
    monkeypatch.delenv("AIRFLOW_CONN_RECEIPTS_SLACK", raising=False)

    notifiers = receipts_notifiers.build_notifiers()
    assert len(notifiers) == 1
    notifiers[0]("receipts_daily run X: validation decision 'alert'", {"quarantined": 3})

    assert len(received) == 1
    mail = received[0]
    assert mail["to"] == ["data-oncall@example.com"] and mail["from"] == "pipeline@example.com"
    import email
    from email.header import decode_header, make_header

    message = email.message_from_string(mail["data"])
    assert "validation decision 'alert'" in str(make_header(decode_header(message["Subject"])))
    body = "".join(part.get_payload(decode=True).decode() for part in message.walk()
                   if part.get_content_type() == "text/html")
    assert "quarantined" in body and "validation decision" in body
