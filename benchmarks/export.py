"""Streaming CSV export: time and peak Python memory of GET /api/v1/classifications/export.csv,
against the same CSV built from all rows loaded at once (``list(queryset)``).

    python -m benchmarks.export --rows 100000

Creates a throwaway test database (SQLite in a temporary folder; with DATABASE_URL, a test
database on that server, as pytest-django does), bulk-inserts ``--rows`` done classifications
of one user, then reads the export through Django's test client chunk by chunk. Peak memory is
tracemalloc's (Python allocations) in a second, separate pass, so the timings are not slowed by it.
Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import tempfile
import time
import tracemalloc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="export-bench-")
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{tmp}/bench.sqlite3")
    os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings.test"
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment
    from django.utils import timezone

    from classifier.evaluation import exports
    from classifier.models import Classification

    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0)
    try:
        user = get_user_model().objects.create_user("bench", password="bench-pass-123")
        now = timezone.now()
        start = time.perf_counter()
        Classification.objects.bulk_create(
            (
                Classification(
                    owner=user,
                    status=Classification.Status.DONE,
                    image_format="png",
                    original_filename=f"photo-{i}.png",
                    top_label="cat",
                    top_probability=0.9,
                    predictions=[{"label": "cat", "probability": 0.9}, {"label": "dog", "probability": 0.05}],
                    model_version="bench-1",
                    created_at=now,
                    started_at=now,
                    finished_at=now,
                )
                for i in range(args.rows)
            ),
            batch_size=5000,
        )
        print(f"{args.rows} rows inserted in {time.perf_counter() - start:.1f} s ({connection.vendor})")
        client = Client()
        client.force_login(user)

        def streamed() -> int:
            response = client.get("/api/v1/classifications/export.csv")
            assert response.streaming
            return sum(1 for _ in response.streaming_content) - 1

        def materialised() -> int:
            rows = list(exports.with_feedback(Classification.objects.filter(owner=user)))
            buf = io.StringIO()
            writer = csv.writer(buf)
            writer.writerow(exports.HEADER)
            for c in rows:
                writer.writerow(exports._row(c, staff=False))
            return len(rows)

        for name, fn in (("streamed (QuerySet.iterator)", streamed), ("all rows in memory (list)", materialised)):
            start = time.perf_counter()
            n = fn()
            seconds = time.perf_counter() - start
            tracemalloc.start()
            fn()
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(f"{name:30s} {n} rows in {seconds:.2f} s ({n / seconds:,.0f} rows/s), peak {peak / 2**20:.1f} MiB")
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
