"""Discovery without Airflow: partitions of a data interval, listing, ids, duplicates,
already-extracted receipts and batching; S3 listing against a moto server over HTTP."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from extractor.pipeline import config
from extractor.pipeline.sources import discovery

UTC = dt.UTC


def _t(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize("start,end,days", [
    (_t(2026, 3, 1), _t(2026, 3, 2), ["2026-03-01"]),
    (_t(2026, 3, 1), _t(2026, 3, 4), ["2026-03-01", "2026-03-02", "2026-03-03"]),
    (_t(2026, 3, 1, 7), _t(2026, 3, 2, 7), ["2026-03-01", "2026-03-02"]),
    (_t(2026, 3, 1, 7), _t(2026, 3, 1, 7), ["2026-03-01"]),
    (dt.datetime(2026, 3, 1, 23, tzinfo=dt.timezone(dt.timedelta(hours=-1))),
     dt.datetime(2026, 3, 2, 23, tzinfo=dt.timezone(dt.timedelta(hours=-1))), ["2026-03-02"]),
])
def test_partition_days_are_the_utc_days_an_interval_touches(start, end, days):
    assert [d.isoformat() for d in discovery.partition_days(start, end)] == days


def _put(root, day, name, data: bytes):
    path = root / f"dt={day}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_discover_hashes_dedupes_skips_and_batches(tmp_path):
    day = dt.date(2026, 3, 1)
    for i in range(5):
        _put(tmp_path, day, f"r{i}.jpg", f"receipt {i}".encode())
    _put(tmp_path, day, "copy-of-r0.jpg", b"receipt 0")
    _put(tmp_path, day, ".DS_Store", b"junk")
    _put(tmp_path, day, "_SUCCESS", b"")
    _put(tmp_path, day, "empty.jpg", b"")  # a receipt candidate: quarantined later, not here
    _put(tmp_path, dt.date(2026, 3, 2), "tomorrow.jpg", b"not today")
    done_id = hashlib.sha256(b"receipt 3").hexdigest()
    asked = []

    def already(version, ids):
        asked.append((version, sorted(ids)))
        return {done_id}

    found = discovery.discover(str(tmp_path), [day], extractor_version="v1",
                               already_extracted=already, batch_size=2)

    counts = found.counts()
    assert {k: counts[k] for k in ("listed", "duplicates", "already_extracted", "new", "batches",
                                   "ids_from_checksum", "page_receipts", "skipped")} == {
        "listed": 7, "duplicates": 1, "already_extracted": 1, "new": 5, "batches": 3,
        "ids_from_checksum": 0, "page_receipts": 0, "skipped": 2}
    assert counts["skipped_reasons"] == {"marker file (name starts with '.' or '_')": 2}
    assert [len(b) for b in found.batches] == [2, 2, 1]
    items = [r for b in found.batches for r in b]
    names = [r.uri.rsplit("/", 1)[-1] for r in items]
    assert names == ["copy-of-r0.jpg", "empty.jpg", "r1.jpg", "r2.jpg", "r4.jpg"]
    for item in items:
        assert item.receipt_id == hashlib.sha256(open(item.uri, "rb").read()).hexdigest()
    assert asked[0][0] == "v1" and len(asked[0][1]) == 6


def test_missing_partition_is_an_empty_day(tmp_path):
    found = discovery.discover(str(tmp_path), [dt.date(2026, 3, 1)], extractor_version="v1",
                               already_extracted=lambda v, ids: set(), batch_size=8)
    assert found.batches == [] and found.counts()["listed"] == 0


@pytest.fixture
def s3(s3_endpoint):
    """A client of the moto S3 server (tests/conftest.py) with an empty bucket "landing"."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket="landing")
    yield client
    for obj in client.list_objects_v2(Bucket="landing").get("Contents", []):
        client.delete_object(Bucket="landing", Key=obj["Key"])
    client.delete_bucket(Bucket="landing")


def test_s3_listing_through_a_real_s3_api(s3):
    for key, body in [("in/dt=2026-03-01/", b""), ("in/dt=2026-03-01/a.jpg", b"A"),
                      ("in/dt=2026-03-01/b.jpg", b"B"), ("in/dt=2026-03-01/_SUCCESS", b""),
                      ("in/dt=2026-03-01/nested/c.jpg", b"C"), ("in/dt=2026-03-02/d.jpg", b"D")]:
        s3.put_object(Bucket="landing", Key=key, Body=body)
    found = discovery.discover("s3://landing/in", [dt.date(2026, 3, 1)], extractor_version="v",
                               already_extracted=lambda v, ids: set(), batch_size=10,
                               s3_client=s3)
    assert [(r.uri, r.size) for r in found.batches[0]] == [
        ("s3://landing/in/dt=2026-03-01/a.jpg", 1), ("s3://landing/in/dt=2026-03-01/b.jpg", 1)]
    assert found.batches[0][0].receipt_id == hashlib.sha256(b"A").hexdigest()
    assert discovery.read_bytes("s3://landing/in/dt=2026-03-01/b.jpg", s3) == b"B"


def test_config_variables_win_over_env_and_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for key in ("RECEIPT_SOURCE", "RECEIPT_WAREHOUSE_URL", "RECEIPT_STAGING_DIR",
                "RECEIPT_THRESHOLDS", "RECEIPT_BATCHES_PER_TASK", "RECEIPT_DATA_DOCS_DIR",
                "RECEIPT_STAGING_RETENTION_DAYS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RECEIPT_STAGING_DIR", "/shared/staging")
    variables = {"receipts_source": "s3://bucket/incoming", "receipts_thresholds": '{"min_rows": 1}',
                 "receipts_staging_dir": None, "receipts_data_docs_dir": "none"}

    cfg = config.load_config(variables.get)

    assert cfg.source == "s3://bucket/incoming" and cfg.source_is_s3
    assert cfg.staging_dir == config.Path("/shared/staging")
    assert cfg.warehouse_url == f"duckdb:///{tmp_path / 'var' / 'warehouse.duckdb'}"
    assert cfg.thresholds == {"min_rows": 1} and cfg.data_docs_dir is None
    assert cfg.batches_per_task == 4 and cfg.staging_retention_days == 30
    assert config.load_config(variables.get, warehouse_conn_exists=True).warehouse_url is None
    monkeypatch.setenv("RECEIPT_STAGING_RETENTION_DAYS", "0")
    assert config.load_config(variables.get).staging_retention_days == 0  # 0 keeps everything


def test_config_rejects_bad_json(monkeypatch):
    from extractor.errors import ConfigError

    with pytest.raises(ConfigError):
        config.load_config({"receipts_thresholds": "[1, 2]"}.get)


@pytest.mark.parametrize("value", ["-1", "a week", "7.5"])
def test_config_rejects_bad_retention(value):
    from extractor.errors import ConfigError

    with pytest.raises(ConfigError, match="staging_retention_days"):
        config.load_config({"receipts_staging_retention_days": value}.get)


def test_s3_objects_with_a_stored_sha256_are_not_read_at_discovery(s3):
    """Uploads that carry a full-object SHA-256 (checked by S3 on upload) give their id from
    one HEAD; the others, and multipart uploads, whose checksum is composite, are read and
    hashed. GETs are counted with botocore's own event hooks on a real moto server."""
    part = "in/dt=2026-03-01/"
    bodies = {"a.jpg": b"receipt A" * 100, "b.jpg": b"receipt B" * 100, "c.jpg": b"receipt C" * 100}
    s3.put_object(Bucket="landing", Key=part + "a.jpg", Body=bodies["a.jpg"], ChecksumAlgorithm="SHA256")
    s3.put_object(Bucket="landing", Key=part + "b.jpg", Body=bodies["b.jpg"])  # boto3's default CRC32
    upload = s3.create_multipart_upload(Bucket="landing", Key=part + "c.jpg", ChecksumAlgorithm="SHA256")
    sent = s3.upload_part(Bucket="landing", Key=part + "c.jpg", UploadId=upload["UploadId"], PartNumber=1,
                          Body=bodies["c.jpg"], ChecksumAlgorithm="SHA256")
    s3.complete_multipart_upload(
        Bucket="landing", Key=part + "c.jpg", UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": sent["ETag"],
                                    "ChecksumSHA256": sent["ChecksumSHA256"]}]})
    gets: list[str] = []
    s3.meta.events.register("before-parameter-build.s3.GetObject",
                            lambda params, **kw: gets.append((params["Key"], params.get("Range"))))

    found = discovery.discover("s3://landing/in", [dt.date(2026, 3, 1)], extractor_version="v",
                               already_extracted=lambda v, ids: set(), batch_size=10, s3_client=s3)

    assert {r.uri.rsplit("/", 1)[-1]: r.receipt_id for r in found.batches[0]} == {
        name: hashlib.sha256(body).hexdigest() for name, body in bodies.items()}
    # a.jpg was not read: only its first KiB, to tell whether it is a multi-page document
    assert sorted(gets) == [(part + "a.jpg", "bytes=0-1023"), (part + "b.jpg", None), (part + "c.jpg", None)]
    assert found.ids_from_checksum == 1
    # what discovery trusted is what extract will read
    trusted = discovery.s3_sha256(s3, "s3://landing/" + part + "a.jpg")
    assert trusted == hashlib.sha256(bodies["a.jpg"]).hexdigest()
    assert discovery.s3_sha256(s3, "s3://landing/" + part + "b.jpg") is None
