"""The resident extraction service: one long-running process per model copy (per GPU).

Airflow 3 runs every task instance in a fresh process, so a model loaded by a task dies
with it. The service loads the spec's model once (``load_backend``), keeps it and the
engine's graphs warm, and serves extraction over local HTTP; extract tasks become
clients (``client.ServiceBackend``) when ``RECEIPT_EXTRACTION_SERVICE_URL`` is set.

  protocol.py  the wire format and the service errors
  batcher.py   the resident model (load counter, reload/refuse) and the cross-request batcher
  app.py       FastAPI endpoints and ``serve`` (``python -m extractor serve``)
  client.py    the tasks' side: the Backend contract over HTTP

Importing this package imports neither torch nor FastAPI.
"""
