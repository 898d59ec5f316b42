"""Two server replicas on one PostgreSQL database: every replica sees every job, a schedule tick is
taken by one replica only, and ingest runs never overlap (the advisory lock)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from server.jobs import JobQueue, JobRequest
from server.schedule import ServerSchedule
from services.context import ShopLens
from tests.support.catalog import write_catalog

pytestmark = pytest.mark.postgres


@pytest.fixture
def replicas(settings_factory, postgres_url: str, tmp_path: Path):
    """Two apps sharing the database, each with its own job queue (as two server processes would)."""
    apps = [ShopLens(settings_factory(database_url=postgres_url, home=tmp_path / f"replica-{n}")) for n in range(2)]
    queues = [JobQueue(app, f"replica-{n}") for n, app in enumerate(apps)]
    yield apps, queues
    for queue in queues:
        queue.stop(timeout=30)
    for app in apps:
        app.close()


def test_a_schedule_tick_is_taken_by_one_replica(replicas, tmp_path: Path) -> None:
    _apps, queues = replicas
    catalog = write_catalog(tmp_path / "catalog", 3)
    schedules = [ServerSchedule(str(catalog), every="30m") for _ in queues]
    for schedule, queue in zip(schedules, queues, strict=False):
        schedule._jobs = queue  # started without a clock: the test ticks by hand
    barrier = threading.Barrier(2)
    taken: list[object] = [None, None]

    def tick(n: int) -> None:
        barrier.wait()
        taken[n] = schedules[n].tick()

    threads = [threading.Thread(target=tick, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    jobs = queues[0].list()
    assert len([j for j in jobs if j.trigger == "schedule"]) == 1, jobs
    # any replica answers for any job
    assert queues[1].get(jobs[0].id) == queues[0].get(jobs[0].id)
    # a later tick within half a period is skipped, even once the first run is done
    queues[0]._update(jobs[0].id, status="succeeded")
    assert schedules[1].tick() is None and schedules[0].tick() is None


def test_runs_of_two_replicas_never_overlap(replicas, tmp_path: Path) -> None:
    apps, queues = replicas
    catalogs = [write_catalog(tmp_path / f"shop-{n}", 6) for n in range(2)]
    submitted = [
        q.submit(JobRequest("ingest", "api", str(c), {"path": str(c)})) for q, c in zip(queues, catalogs, strict=False)
    ]
    for queue in queues:
        queue.start()
    done = [_wait(queue, job.id) for queue, job in zip(queues, submitted, strict=False)]
    assert all(j.status in ("succeeded", "partial") for j in done), done
    runs = sorted(apps[0].catalog.list_runs(10), key=lambda r: r.started_at)
    assert len(runs) == 2
    assert runs[0].finished_at <= runs[1].started_at  # one after the other, never both at once


def _wait(queue: JobQueue, job_id: str, timeout: float = 120.0):
    import time

    deadline = time.monotonic() + timeout
    while True:
        job = queue.get(job_id)
        assert job is not None
        if job.finished:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
