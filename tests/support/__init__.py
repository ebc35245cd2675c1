"""
Shared test infrastructure: the Airflow process harness, Redis and PostgreSQL servers, a triggerer harness, a
hook process, a delaying proxy and waiting helpers (see ARCHITECTURE.md).
"""
