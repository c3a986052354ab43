"""The pipeline library the Airflow DAG calls: staging, validation, warehouse, alerts.

Framework-free (no Airflow imports); great_expectations and database drivers are
imported inside the functions that use them, so importing this package stays cheap.
"""
