"""The pipeline library the Airflow DAG calls, a folder per role:

* ``sources/``: discovery of new receipts, staging of extraction results;
* ``quality/``: the expectation suite, validation, run summaries, alerts;
* ``warehouse/``: the ``Warehouse`` interface, its DuckDB and PostgreSQL dialects, the DDL;
* ``records.py``: the rows that quality and warehouse share;
* ``config.py``: pipeline settings; ``tasks.py``: the task bodies the DAG calls.

Framework-free (no Airflow imports); great_expectations and database drivers are
imported inside the functions that use them, so importing this package stays cheap.
"""
