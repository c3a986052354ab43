"""The production shape: receipts in S3 (a moto server over HTTP on 127.0.0.1, reached
through the Amazon provider's hook and an Airflow connection with ``endpoint_url``) and a
PostgreSQL warehouse (the machine's server at 127.0.0.1:5432, reached through the
Airflow connection ``receipts_warehouse``; a test database is created and dropped).
Then a model from an S3 prefix: ``ensure_model`` downloads a tiny offline Mllama once into
the model cache through the same connection, and the HF backend runs it."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from receipts_dag_helpers import Pipeline, synthetic_receipt

pytestmark = pytest.mark.integration
DAY = dt.date(2026, 3, 1)
PG = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture
def postgres_db():
    psycopg = pytest.importorskip("psycopg")
    name = f"receipts_dagtest_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(f"{PG}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432: {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_s3_partition_into_postgres(pipeline, s3_endpoint, postgres_db, monkeypatch):
    import boto3

    monkeypatch.setenv("AIRFLOW_CONN_RECEIPTS_S3", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"}}))
    # URI form as a deployment would set it; the query becomes the connection's extra
    monkeypatch.setenv("AIRFLOW_CONN_RECEIPTS_WAREHOUSE", f"{postgres_db}?sslmode=prefer")
    monkeypatch.delenv("RECEIPT_WAREHOUSE_URL")
    monkeypatch.setenv("AIRFLOW_VAR_RECEIPTS_SOURCE", "s3://receipts-landing/incoming")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="receipts-landing")
    part = f"incoming/dt={DAY}/"
    s3.put_object(Bucket="receipts-landing", Key=part, Body=b"")  # a console "folder"
    s3.put_object(Bucket="receipts-landing", Key=part + "a.jpg",  # its id comes from a HEAD
                  Body=synthetic_receipt(1, date="2026-02-27"), ChecksumAlgorithm="SHA256")
    s3.put_object(Bucket="receipts-landing", Key=part + "b.jpg",
                  Body=synthetic_receipt(2, date="2026-02-28"))
    s3.put_object(Bucket="receipts-landing", Key=part + "empty.jpg", Body=b"")
    s3.put_object(Bucket="receipts-landing", Key=f"incoming/dt={DAY + dt.timedelta(days=1)}/c.jpg",
                  Body=b"next day's receipt")
    pg = Pipeline(root=pipeline.root, dag=pipeline.dag, warehouse_url=postgres_db)

    dag_run = pipeline.run(DAY)

    assert dag_run.state == "success", pipeline.task_states(dag_run)
    loaded = sorted(src for (src,) in pg.fetch("SELECT source FROM receipts"))
    assert loaded == [f"s3://receipts-landing/{part}a.jpg", f"s3://receipts-landing/{part}b.jpg"]
    (source, reason), = pg.fetch("SELECT source, reason FROM quarantine")
    assert source.endswith("empty.jpg") and "empty file" in reason
    (run_id, counts, summary), = pg.fetch("SELECT run_id, counts, summary FROM runs")
    assert run_id == dag_run.run_id and json.loads(counts)["discovered"] == 3
    assert json.loads(summary)["discovery"]["ids_from_checksum"] == 1  # a.jpg: a HEAD, no read

    # the same day again: nothing new is extracted, nothing is duplicated
    again = pipeline.run(DAY)
    assert again.state == "success"
    assert pg.fetch("SELECT count(*) FROM receipts") == [(2,)]
    assert pg.fetch("SELECT count(*) FROM quarantine") == [(1,)]

    # a model whose weights live under an S3 prefix, fetched once into the model cache
    from extractor.testing.tiny_models import build_tiny_model

    model_dir = build_tiny_model("mllama", pipeline.root / "built" / "tiny-mllama")
    s3.create_bucket(Bucket="models")
    for path in model_dir.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), "models", f"tiny-mllama/{path.relative_to(model_dir)}")
    monkeypatch.setenv("AIRFLOW_VAR_RECEIPTS_THRESHOLDS",  # random output: all quarantined
                       json.dumps({"max_quarantine_rate_alert": 1.0, "max_quarantine_rate_fail": 1.0}))
    monkeypatch.setenv("RECEIPT_ALLOWED_MODELS", "tiny/mllama")  # admin: a run may name it
    hf = {"backend": "hf", "model_id": "tiny/mllama", "revision": "s3test",
          "source": "s3://models/tiny-mllama", "dtype": "float32", "device_map": None,
          "batch_size": 4, "max_new_tokens": 4, "grammar": "none"}
    hf_run = pipeline.run(DAY, conf={"extractor": hf})
    assert hf_run.state == "success", pipeline.task_states(hf_run)
    cached = [p for p in (pipeline.root / "models").iterdir() if p.is_dir()]
    assert len(cached) == 1 and (cached[0] / "model.safetensors").is_file()
    assert (cached[0] / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()
    rows = pg.fetch("SELECT stage, reason FROM quarantine WHERE extractor_version = ?",
                    ("hf:tiny/mllama@s3test:v1",))
    assert len(rows) == 3 and all(stage == "extract" for stage, _ in rows)
