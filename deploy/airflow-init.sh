#!/usr/bin/env bash
# Start-up of the receipts stack's Airflow metadata, run once per `docker compose up` by the
# airflow-init service (and by tests/integration/test_celery_distributed.py on this machine).
#
#  1. airflow db migrate                     (idempotent)
#  2. pools from pools.json                  (the file is the source of truth: re-applied)
#  3. Variables from variables.json          (existing keys are KEPT: a restart must never
#                                             undo a model switch or a rollback)
#  4. shared volumes owned by AIRFLOW_UID    (only when run as root, in the container)
#
# Connections are not created here: they come from AIRFLOW_CONN_* environment variables
# (docker-compose.yaml), so their secrets never land in the metadata database.
#
# Overridable: RECEIPT_INIT_VARIABLES_FILE, RECEIPT_INIT_POOLS_FILE, RECEIPT_SHARED_DIRS.
set -euo pipefail

deploy_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
variables_file="${RECEIPT_INIT_VARIABLES_FILE:-${deploy_dir}/variables.json}"
pools_file="${RECEIPT_INIT_POOLS_FILE:-${deploy_dir}/pools.json}"
shared_dirs="${RECEIPT_SHARED_DIRS:-${RECEIPT_MODEL_CACHE:-} ${RECEIPT_STAGING_DIR:-} ${RECEIPT_DATA_DOCS_DIR:-}}"

echo "airflow-init: db migrate"
airflow db migrate

echo "airflow-init: pools from ${pools_file}"
airflow pools import "${pools_file}"

echo "airflow-init: Variables from ${variables_file} (existing keys kept)"
airflow variables import --action-on-existing-key skip "${variables_file}"

if [[ "$(id -u)" == "0" ]]; then
    for dir in ${shared_dirs}; do
        mkdir -p "${dir}"
        chown -R "${AIRFLOW_UID:-50000}:0" "${dir}"
        echo "airflow-init: ${dir} owned by ${AIRFLOW_UID:-50000}:0"
    done
fi

echo "airflow-init: done"
