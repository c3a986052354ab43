"""The receipts Data Docs and quality report, served by the Airflow api-server.

The pages are static files in the Data Docs folder (``RECEIPT_DATA_DOCS_DIR``, on the
storage the workers write to; see ``extractor.pipeline.quality.datadocs``). This plugin
mounts them at ``/receipts-quality/`` for users who may read the ``receipts_daily`` DAG
and links them from the UI:

* a "Receipt quality" entry in the navigation: the index of runs, and from it the
  quality report over time;
* a "Data Docs" tab on every DAG run: that run's page (``/receipts-quality/runs/{RUN_ID}``).

Only the api-server needs this module; it reads the folder from the environment (the
compose file sets ``RECEIPT_DATA_DOCS_DIR`` for every service).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/receipts-quality"
DAG_ID = "receipts_daily"


def data_docs_dir() -> str:
    return os.path.abspath(os.environ.get("RECEIPT_DATA_DOCS_DIR") or "var/data_docs")


def create_app(docs_dir: str | None = None):
    """The FastAPI app: ``GET /{path}`` returns a file of the Data Docs folder."""
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import FileResponse

    from extractor.pipeline.quality.datadocs import docs_file

    guard = requires_access_dag("GET", param_dag_id=DAG_ID)
    app = FastAPI(title="receipts Data Docs", dependencies=[Depends(guard)])
    app.state.guard = guard  # tests swap it through app.dependency_overrides

    @app.get("/{path:path}")
    def page(path: str = "") -> FileResponse:
        found = docs_file(docs_dir or data_docs_dir(), path)
        if found is None:
            raise HTTPException(404, f"no Data Docs page {path!r} (has the run been validated?)")
        return FileResponse(found, headers={"Cache-Control": "no-cache"})

    return app


class ReceiptsQualityDocsPlugin(AirflowPlugin):
    name = "receipts_quality_docs"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "receipts Data Docs"}]
    external_views: ClassVar[list[dict[str, Any]]] = [
        {"name": "Receipt quality", "href": f"{URL_PREFIX}/", "destination": "nav",
         "category": "browse", "url_route": "receipt-quality"},
        {"name": "Data Docs", "href": f"{URL_PREFIX}/runs/{{RUN_ID}}", "destination": "dag_run",
         "url_route": "receipt-data-docs"},
    ]
