"""Airflow plugin ``receipts_review``: serves receipt images to the review forms.

``GET /receipts-review/images/{receipt_id}`` returns the bytes of a receipt the warehouse
knows (from ``receipts``, ``quarantine`` or ``corrections``), read from where it came from
and checked against its id. It sits behind Airflow's own authentication (the UI's session
cookie or a bearer token) and asks for read access to the ``receipts_review`` DAG's
human-in-the-loop details, the same permission that shows the form.
"""

from __future__ import annotations

import logging
import re

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request, Response

log = logging.getLogger(__name__)
REVIEW_DAG_ID = "receipts_review"
RECEIPT_ID = re.compile(r"^[0-9a-f]{64}$")

app = FastAPI(title="Receipt review images", description=__doc__)


def _variable(key: str):
    from airflow.models.variable import Variable

    return Variable.get(key, default_var=None)


def _warehouse():
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    from extractor.pipeline import config as cfgmod
    from extractor.pipeline.warehouse import open_warehouse

    try:
        url = Connection.get_connection_from_secrets(cfgmod.WAREHOUSE_CONN_ID).get_uri()
    except AirflowNotFoundException:
        url = cfgmod.load_config(_variable).warehouse_url
    return open_warehouse(url)


def _s3_client():
    """As the pipeline's tasks pick it: the configured connection id, else the first of
    ``receipts_s3`` / ``aws_default`` that exists."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from extractor.pipeline import config as cfgmod

    conn_id = cfgmod.load_config(_variable).s3_conn_id
    for candidate in () if conn_id else cfgmod.DEFAULT_S3_CONN_IDS:
        try:
            Connection.get_connection_from_secrets(candidate)
        except AirflowNotFoundException:
            continue
        conn_id = candidate
        break
    return S3Hook(aws_conn_id=conn_id or cfgmod.DEFAULT_S3_CONN_IDS[-1]).get_conn()


async def may_read_review_forms(request: Request) -> None:
    """Airflow's own check, as its REST API makes it: the user from the bearer token or the
    UI's session cookie (401 without), then read access to the review DAG's human-in-the-loop
    details (403). Imported here, not at module level: every task process loads the plugins
    folder, and only the api-server needs Airflow's API security code."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import get_user, requires_access_dag
    from fastapi.security import HTTPAuthorizationCredentials
    from fastapi.security.utils import get_authorization_scheme_param

    scheme, credentials = get_authorization_scheme_param(request.headers.get("Authorization"))
    bearer = (HTTPAuthorizationCredentials(scheme=scheme, credentials=credentials)
              if scheme and credentials else None)
    user = await get_user(request, None, bearer)
    requires_access_dag(method="GET", access_entity=DagAccessEntity.HITL_DETAIL,
                        param_dag_id=REVIEW_DAG_ID)(request, user)


@app.get("/images/{receipt_id}", dependencies=[Depends(may_read_review_forms)])
def receipt_image(receipt_id: str) -> Response:
    from extractor.pipeline.review.images import (
        ImageUnavailable,
        image_format,
        read_image,
        sources_of,
    )

    if not RECEIPT_ID.match(receipt_id):
        raise HTTPException(status_code=404, detail="not a receipt id (sha256 hex)")
    warehouse = _warehouse()
    try:
        sources = sources_of(warehouse, receipt_id)
    finally:
        warehouse.close()
    if not sources:
        raise HTTPException(status_code=404, detail=f"receipt {receipt_id} is not in the warehouse")
    problems = []
    for source in sources:
        try:
            data = read_image(source, receipt_id, _s3_client() if source.startswith("s3://") else None)
            _, media_type = image_format(data)
        except ImageUnavailable as exc:
            problems.append(str(exc))
            continue
        return Response(content=data, media_type=media_type,
                        headers={"Cache-Control": "private, max-age=3600"})
    log.warning("receipt %s image unavailable: %s", receipt_id, problems)
    raise HTTPException(status_code=410, detail="; ".join(problems))


class ReceiptsReviewPlugin(AirflowPlugin):
    name = "receipts_review"
    fastapi_apps = [{"app": app, "url_prefix": "/receipts-review", "name": "Receipt review images"}]
