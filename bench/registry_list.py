"""Registry list API under load: p50/p99 latency and query count with 10,000 versions.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/berth .venv/bin/python bench/registry_list.py

Runs against a throwaway test database (`test_<name>` of DATABASE_URL, or a SQLite file when
DATABASE_URL is not set), created, migrated and dropped by the script. Requests go through the
whole Django stack (middleware, token authentication, DRF, filters, pagination) with Django's
test client, so the figures are the portal's own time, without a network hop.

Goal: p99 <= 50 ms, and the same number of queries whatever the page size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument(
        "--keep-db", action="store_true", help="reuse the test database if it exists"
    )
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext, setup_test_environment

    settings.DEBUG = False
    settings.ALLOWED_HOSTS = ["*"]
    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    test_db = connection.creation.create_test_db(
        verbosity=0, autoclobber=True, keepdb=args.keep_db, serialize=False
    )
    print(f"database: {connection.vendor} {test_db}")
    # Latency figures mean little on a busy machine: say how busy it was.
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    try:
        client, token = _seed(args)
        urls = {
            "all versions": "/api/v1/versions/",
            "all versions, status=packaged": "/api/v1/versions/?status=packaged",
            "all versions, tag=gpu": "/api/v1/versions/?tag=gpu",
            "one model's versions": "/api/v1/models/model-0007/versions/",
            "models": "/api/v1/models/",
        }
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
        print(f"\n{args.requests} requests each, page size {args.page_size}:")
        print(f"{'list':34} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'rows':>5}")
        worst_p99 = 0.0
        for label, url in urls.items():
            sep = "&" if "?" in url else "?"
            full = f"{url}{sep}page_size={args.page_size}"
            for _ in range(10):  # warm caches and connections
                first = client.get(full, **headers)
            pages = max(1, min(20, -(-first.json()["count"] // args.page_size)))
            timings = []
            for index in range(args.requests):
                page = 1 + index % pages
                started = time.perf_counter()
                response = client.get(f"{full}&page={page}", **headers)
                timings.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise SystemExit(f"{full}&page={page}: HTTP {response.status_code}")
            rows = len(response.json()["results"])
            timings.sort()
            p50 = statistics.median(timings)
            p99 = timings[min(len(timings) - 1, int(round(0.99 * len(timings))) - 1)]
            worst_p99 = max(worst_p99, p99)
            print(f"{label:34} {p50:8.1f} {p99:8.1f} {timings[-1]:8.1f} {rows:5d}")

        print("\nqueries per request by page size:")
        counts = {}
        for label, url in (("all versions", "/api/v1/versions/"), ("models", "/api/v1/models/")):
            for size in (10, 50, 200):
                with CaptureQueriesContext(connection) as queries:
                    response = client.get(f"{url}?page_size={size}", **headers)
                counts[(label, size)] = len(queries.captured_queries)
                print(
                    f"  {label:14} page_size={size:<4} "
                    f"rows={len(response.json()['results']):<4} queries={len(queries)}"
                )
        constant = all(
            len({counts[(label, size)] for size in (10, 50, 200)}) == 1
            for label in ("all versions", "models")
        )
        print(
            f"\nworst p99: {worst_p99:.1f} ms (goal <= 50 ms): "
            f"{'met' if worst_p99 <= 50 else 'NOT met'}"
        )
        print(f"query count independent of page size: {'yes' if constant else 'NO'}")
        print(f"load average at end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        return 0 if constant and worst_p99 <= 50 else 1
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0, keepdb=args.keep_db)


def _seed(args):
    import hashlib

    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.utils import timezone

    from portal.services import token_create
    from registry.choices import VersionStatus
    from registry.models import ModelVersion, RegisteredModel

    User = get_user_model()
    if ModelVersion.objects.count() >= args.versions:
        user = User.objects.get(username="bench")
    else:
        started = time.perf_counter()
        user = User.objects.create_user("bench")
        models = RegisteredModel.objects.bulk_create(
            RegisteredModel(name=f"model-{i:04d}", owner=user, tags=["bench"])
            for i in range(args.models)
        )
        statuses = list(VersionStatus.values)
        per_model = args.versions // args.models
        now = timezone.now()
        rows = []
        for m_index, model in enumerate(models):
            for number in range(1, per_model + 1):
                n = m_index * per_model + number
                rows.append(
                    ModelVersion(
                        model=model,
                        version=number,
                        status=statuses[n % len(statuses)],
                        status_changed_at=now,
                        artifact_source="upload",
                        artifact_uri=f"/artifacts/{model.name}/{number}/source.tar.gz",
                        content_sha256=hashlib.sha256(str(n).encode()).hexdigest(),
                        size_bytes=4096 + n,
                        source_repository="https://git.example.com/ml/monorepo",
                        source_commit=hashlib.sha1(str(n).encode()).hexdigest(),
                        dataset_uri=f"s3://datasets/{model.name}.parquet",
                        dataset_version=f"v{n % 7}",
                        metrics={"accuracy": 0.9 + (n % 10) / 100},
                        frameworks=["onnx"],
                        tags=["gpu"] if n % 5 == 0 else ["cpu"],
                        registered_by=user,
                        problems=[],
                        repository_summary={"models": [{"name": "m"}] * 3},
                    )
                )
        ModelVersion.objects.bulk_create(rows, batch_size=2000)
        # Fine-tuned-from links, so list rows carry a parent as real ones do.
        parents = dict(ModelVersion.objects.filter(version=1).values_list("model_id", "id"))
        ModelVersion.objects.filter(version__gt=1).update(parent_id=None)
        for model_id, parent_id in list(parents.items())[: args.models]:
            ModelVersion.objects.filter(model_id=model_id, version__gt=1, version__lte=20).update(
                parent_id=parent_id
            )
        print(
            f"seeded {len(rows)} versions of {len(models)} models "
            f"in {time.perf_counter() - started:.1f} s"
        )
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    _, raw = token_create(actor=user, name="bench")
    return Client(), raw


if __name__ == "__main__":
    raise SystemExit(main())
