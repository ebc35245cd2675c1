"""Test infrastructure that runs in child processes (an Airflow 3 triggerer harness, a delaying proxy)."""
