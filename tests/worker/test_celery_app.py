"""The Celery app's process hooks."""

from __future__ import annotations

from django.db import connections

from worker.celery import keep_database_connections


def test_pool_processes_keep_their_database_connection_across_tasks(settings):
    settings.WORKER_CONN_MAX_AGE = 123
    before = {alias: connections[alias].settings_dict["CONN_MAX_AGE"] for alias in connections}
    try:
        keep_database_connections()  # what worker_process_init runs in each pool process
        assert {connections[alias].settings_dict["CONN_MAX_AGE"] for alias in connections} == {123}
    finally:
        for alias, age in before.items():
            connections[alias].settings_dict["CONN_MAX_AGE"] = age
