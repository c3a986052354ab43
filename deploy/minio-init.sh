#!/bin/sh
# One-shot bucket creation for the receipts stack (minio-init service, minio/mc image).
# Idempotent: safe on every `docker compose up`.
#   BUCKETS                 space-separated bucket names (receipts, models, airflow-logs)
#   RECEIPTS_S3_ACCESS_KEY  the pipeline's own key pair (readwrite), used by the Airflow
#   RECEIPTS_S3_SECRET_KEY  connection `receipts_s3`; the root account stays unused
set -eu

mc alias set store "${MINIO_URL}" "${MINIO_ROOT_USER}" "${MINIO_ROOT_PASSWORD}"

for bucket in ${BUCKETS}; do
    mc mb --ignore-existing "store/${bucket}"
done

mc admin user add store "${RECEIPTS_S3_ACCESS_KEY}" "${RECEIPTS_S3_SECRET_KEY}"
# "attach" fails when the policy is already attached (a restart): check, then attach.
if ! mc admin user info store "${RECEIPTS_S3_ACCESS_KEY}" | grep -q readwrite; then
    mc admin policy attach store readwrite --user "${RECEIPTS_S3_ACCESS_KEY}"
fi

echo "minio-init: buckets ${BUCKETS} ready"
