"""Background jobs: ingests accepted by the API run here, one at a time, and outlive the request.

Each job is a row in SQL, so any server replica answers `GET /api/v1/jobs/{id}` and a job's
progress survives the browser tab that started it. The server that accepted a job runs it (an
upload's files are on its disk); the store's ingest lock keeps runs of several replicas (and of a
command line without a server) from overlapping.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update

from ingest.bundles import remove_upload, sweep_uploads
from ingest.locking import LockBusy
from ingest.pipeline import Ingestor, IngestResult, ingestor_for
from ingest.readers import Catalog
from ingest.sources import load_catalog
from server import schemas
from services.catalog.models import Job, utcnow
from services.catalog.store import MAX_STORED_ERRORS, rowcount
from services.context import ShopLens
from services.errors import ShopLensError

log = logging.getLogger(__name__)

TERMINAL = frozenset({"succeeded", "partial", "failed", "interrupted"})
ACTIVE = ("queued", "running")
PROGRESS_EVERY = 0.5  # seconds between progress writes
HEARTBEAT_EVERY = 10.0
STALE_AFTER = timedelta(seconds=60)  # a running job not heard of for this long lost its server
LOCK_POLL = 2.0  # seconds between tries of a busy store lock (so a stop is noticed)


@dataclass(frozen=True)
class JobRequest:
    kind: str  # ingest | reindex
    trigger: str  # api | admin | cli | schedule
    source: str  # what the job reads, for people
    params: dict[str, Any]  # url | path | upload (+ prune, force_prune)


class JobQueue:
    def __init__(self, app: ShopLens, server_id: str):
        self.app, self.server_id = app, server_id
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._payloads: dict[str, Catalog] = {}  # uploads: parsed and saved by the request that accepted them
        self._ingestor: Ingestor | None = None
        self._lock = threading.Lock()
        self._owed: dict[str, dict[str, Any]] = {}  # job ends the database missed (it was away): told later
        self._owed_runs: list[IngestResult] = []  # likewise the ends of the runs those jobs stopped

    # -- the API's side -----------------------------------------------------------------------
    def submit(self, request: JobRequest, catalog: Catalog | None = None) -> schemas.Job:
        job_id = uuid.uuid4().hex
        if catalog is not None:
            self._payloads[job_id] = catalog
        with self.app.catalog.session() as session:
            job = Job(
                id=job_id,
                kind=request.kind,
                trigger=request.trigger,
                source=request.source[:2000],
                params=request.params,
                status="queued",
                server_id=self.server_id,
            )
            session.add(job)
            session.flush()
            view = job_view(job)
        self._wake.set()
        return view

    def get(self, job_id: str) -> schemas.Job | None:
        with self.app.catalog.session() as session:
            job = session.get(Job, job_id)
            return job_view(job) if job is not None else None

    def list(self, limit: int = 20) -> list[schemas.Job]:
        with self.app.catalog.session() as session:
            jobs = session.scalars(select(Job).order_by(Job.created_at.desc()).limit(limit))
            return [job_view(j) for j in jobs]

    def waiting(self) -> int:
        with self.app.catalog.session() as session:
            return session.scalar(select(func.count()).select_from(Job).where(Job.status.in_(ACTIVE))) or 0

    def active_for(self, source: str) -> schemas.Job | None:
        """A queued or running job of this source on any replica (a schedule skips its tick then)."""
        with self.app.catalog.session() as session:
            job = session.scalar(
                select(Job).where(Job.source == source, Job.status.in_(ACTIVE)).order_by(Job.created_at)
            )
            return job_view(job) if job is not None else None

    def queued_since(self, source: str, trigger: str, since: datetime) -> bool:
        with self.app.catalog.session() as session:
            found = session.scalar(
                select(Job.id).where(Job.source == source, Job.trigger == trigger, Job.created_at >= since).limit(1)
            )
            return found is not None

    # -- the worker ---------------------------------------------------------------------------
    def start(self) -> None:
        self.recover_stale()
        sweep_uploads(self.app.settings.home)
        self._thread = threading.Thread(target=self._loop, name="shoplens-jobs", daemon=True)
        self._thread.start()
        threading.Thread(target=self._heartbeat, name="shoplens-jobs-heartbeat", daemon=True).start()

    def _heartbeat(self) -> None:
        """Say this server is alive for each of its jobs, and mark jobs of servers that stopped
        saying so (killed, crashed, or a replica gone) as interrupted."""
        while not self._stopping.wait(HEARTBEAT_EVERY):
            try:
                self.settle()
                with self.app.catalog.session() as session:
                    session.execute(
                        update(Job)
                        .where(Job.server_id == self.server_id, Job.status.in_(ACTIVE))
                        .values(updated_at=utcnow())
                        .execution_options(synchronize_session=False)
                    )
                self.recover_stale()
            except Exception:  # the database is away: the next beat tries again
                log.warning("job heartbeat failed", exc_info=True)

    def settle(self) -> None:
        """Record the ends the database missed while it was away, once it answers again: a job (and
        its run) that failed then would otherwise show as running for good, since this live server
        keeps beating for it."""
        for run in list(self._owed_runs):
            if run.record(self.app.catalog):
                self._owed_runs.remove(run)
        for job_id, values in list(self._owed.items()):
            if self._update(job_id, **values):
                self._owed.pop(job_id, None)

    def stop(self, timeout: float = 60.0) -> None:
        """Let the running job finish its batch and record itself as interrupted."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            if self._ingestor is not None:
                self._ingestor.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def recover_stale(self) -> int:
        """Jobs whose server stopped beating (killed, crashed) are marked so; live replicas' are not."""
        cutoff = utcnow() - STALE_AFTER
        with self.app.catalog.session() as session:
            result = session.execute(
                update(Job)
                .where(Job.status.in_(ACTIVE), Job.server_id != self.server_id, Job.updated_at < cutoff)
                .values(
                    status="interrupted",
                    finished_at=utcnow(),
                    message="the server that accepted this job stopped before it finished; submit it again",
                )
                .execution_options(synchronize_session=False)
            )
            return rowcount(result)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            job_id = self._claim()
            if job_id is None:
                self._wake.wait(5.0)
                self._wake.clear()
                continue
            self._execute(job_id)

    def _claim(self) -> str | None:
        try:
            with self.app.catalog.session() as session:
                query = (
                    select(Job)
                    .where(Job.status == "queued", Job.server_id == self.server_id)
                    .order_by(Job.created_at)
                    .limit(1)
                )
                if self.app.catalog.dialect == "postgresql":
                    query = query.with_for_update(skip_locked=True)
                job = session.scalar(query)
                if job is None:
                    return None
                job.status, job.started_at = "running", utcnow()
                return job.id
        except Exception:  # the database is away: try again later, never kill the worker
            log.exception("could not read the job queue")
            self._stopping.wait(5.0)
            return None

    def _execute(self, job_id: str) -> None:
        with self.app.catalog.session() as session:
            job = session.get(Job, job_id)
            assert job is not None
            kind, trigger, source, params = job.kind, job.trigger, job.source, dict(job.params)
        ingestor = ingestor_for(self.app)
        with self._lock:
            self._ingestor = ingestor
        reporter = _Reporter(self, job_id, ingestor)
        try:
            result = self._run(job_id, ingestor, reporter, kind, trigger, source, params)
        except ShopLensError as exc:
            self._fail(job_id, exc.message, ingestor.current)
        except Exception as exc:  # recorded on the job; the worker goes on with the next one
            log.exception("job %s failed", job_id)
            self._fail(job_id, f"{exc.__class__.__name__}: {' '.join(str(exc).split())}", ingestor.current)
        else:
            self._finish(job_id, result)
        finally:
            with self._lock:
                self._ingestor = None

    def _run(
        self, job_id: str, ingestor: Ingestor, reporter: _Reporter, kind: str, trigger: str, source: str, params: dict
    ) -> IngestResult:
        try:
            if kind == "reindex":
                return self._locked(job_id, ingestor, lambda wait: ingestor.reindex(progress=reporter, wait=wait))
            catalog = self._catalog(job_id, trigger, source, params)
            prune, force_prune = bool(params.get("prune")), bool(params.get("force_prune"))
            return self._locked(
                job_id,
                ingestor,
                lambda wait: ingestor.ingest(
                    catalog, prune=prune, trigger=trigger, progress=reporter, wait=wait, force_prune=force_prune
                ),
            )
        finally:  # before the job says it ended: an upload's staging copy (its images are in the media store)
            if params.get("folder"):
                remove_upload(Path(params["folder"]), self.app.settings.home)

    def _locked(self, job_id: str, ingestor: Ingestor, run: Callable[[float], IngestResult]) -> IngestResult:
        """Run under the store's ingest lock, waiting for another run (say so on the job) until stopped."""
        said = False
        while True:
            try:
                return run(0.0 if not said else LOCK_POLL)
            except LockBusy:
                if self._stopping.is_set() or ingestor.stop_event.is_set():
                    raise
                if not said:
                    self._update(job_id, message="waiting for another ingest run on this store to finish")
                    said = True

    def _catalog(self, job_id: str, trigger: str, source: str, params: dict[str, Any]) -> Catalog:
        if "upload" in params:
            catalog = self._payloads.pop(job_id, None)
            if catalog is None:
                raise JobLost("this upload was accepted by a server process that has since restarted; upload it again")
            return catalog
        where = params.get("url") or params.get("path") or source
        try:
            return load_catalog(where, timeout=self.app.settings.url_timeout, deadline=self.app.settings.url_deadline)
        except ShopLensError as exc:  # record the failed run too: the history shows every attempt
            run_id = self.app.catalog.record_failed_run(trigger, source, self.app.identity.describe(), exc.message)
            self._update(job_id, run_id=run_id)
            raise

    def _finish(self, job_id: str, result: IngestResult) -> None:
        problems = [e.as_dict() for e in result.errors]
        counts: dict[str, Any] = dict(result.counts.__dict__)
        if result.seconds > 0 and result.counts.images_embedded:
            counts["images_per_second"] = round(result.counts.images_embedded / result.seconds, 2)
        self._update(
            job_id,
            status=result.status,
            run_id=result.run_id,
            counts=counts,
            problems=problems[:MAX_STORED_ERRORS],
            problem_count=len(problems),
            message=result.message or result.summary(),
            finished_at=utcnow(),
            images_embedded=result.counts.images_embedded,
        )

    def _fail(self, job_id: str, message: str, run: IngestResult | None = None) -> None:
        if run is not None and run.status == "failed" and not run.recorded:
            self._owed_runs.append(run)  # the database was away when the run ended: `settle` tells it
        self._update(job_id, status="failed", message=message, finished_at=utcnow())

    def _update(self, job_id: str, **values: Any) -> bool:
        """Write to the job's row; False if the database is away. Progress is best effort, but a
        job's end is kept and written by `settle` once the database answers."""
        values = {k: v for k, v in values.items() if v is not None}
        try:
            with self.app.catalog.session() as session:
                session.execute(update(Job).where(Job.id == job_id).values(updated_at=utcnow(), **values))
        except Exception:
            log.warning("could not update job %s", job_id, exc_info=True)
            if values.get("status") in TERMINAL:
                self._owed[job_id] = values
            return False
        return True


class JobLost(ShopLensError):
    """The job's input lived only in a server process that is gone."""

    code = "job_lost"
    http_status = 410


class _Reporter:
    """The ingest's progress callback: writes done/total and the embedding rate, at most twice a
    second (the queue's heartbeat says the server is alive meanwhile)."""

    def __init__(self, queue: JobQueue, job_id: str, ingestor: Ingestor):
        self.queue, self.job_id, self.ingestor = queue, job_id, ingestor
        self._last = 0.0
        self._first: tuple[float, int] | None = None  # when and at how many images the first batch was in

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < PROGRESS_EVERY and done < total:
            return
        self._last = now
        current = self.ingestor.current
        images = current.counts.images_embedded if current is not None else 0
        run_id = current.run_id if current is not None else None
        rate = None
        if self._first is None:
            self._first = (now, images)
        elif now > self._first[0]:
            rate = round((images - self._first[1]) / (now - self._first[0]), 2)
        counts = {"images_per_second": rate} if rate is not None else None
        self.queue._update(
            self.job_id, done=done, total=total, images_embedded=images, run_id=run_id, message="", counts=counts
        )


def job_view(job: Job) -> schemas.Job:
    started, finished = job.started_at, job.finished_at
    rate = (job.counts or {}).get("images_per_second")  # measured while embedding, not while waiting
    return schemas.Job(
        id=job.id,
        kind=job.kind,
        trigger=job.trigger,
        source=job.source,
        status=job.status,
        finished=job.status in TERMINAL,
        done=job.done,
        total=job.total,
        images_embedded=job.images_embedded,
        images_per_second=rate,
        counts=dict(job.counts or {}),
        problem_count=job.problem_count,
        problems=list(job.problems or [])[:50],
        run_id=job.run_id,
        message=job.message or None,
        created_at=job.created_at,
        started_at=started,
        finished_at=finished,
    )
