"""Catalog schedules (APScheduler): inside the server (`shoplens serve --schedule`), or standalone
(`shoplens schedule` with no server running)."""

from __future__ import annotations

import logging
import re
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from ingest.locking import LockBusy
from ingest.pipeline import IngestResult, ingestor_for
from ingest.readers import CatalogError
from ingest.sources import load_catalog
from server.jobs import JobQueue, JobRequest
from server.schemas import Job
from services.context import ShopLens
from services.fetch import is_url
from services.settings import Settings

log = logging.getLogger(__name__)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_every(text: str) -> timedelta:
    """'30m', '1h', '90s', '2h30m' → a timedelta."""
    parts = re.findall(r"(\d+)\s*([smhd])", text.strip().lower())
    if not parts or re.sub(r"[\dsmhd\s]", "", text.lower()):
        raise ValueError(f"cannot read the interval {text!r}: use e.g. 30m, 1h, 90s or 2h30m")
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError("the interval must be longer than zero")
    return timedelta(seconds=seconds)


def make_trigger(every: str | None, cron: str | None) -> IntervalTrigger | CronTrigger:
    if bool(every) == bool(cron):
        raise ValueError("give exactly one of --every or --cron")
    if every:
        return IntervalTrigger(seconds=parse_every(every).total_seconds())
    try:
        return CronTrigger.from_crontab(cron)
    except ValueError as exc:
        raise ValueError(f"cannot read the cron expression {cron!r}: {exc}") from None


class CatalogSchedule:
    def __init__(
        self,
        app: ShopLens,
        source: str,
        prune: bool = False,
        max_runs: int | None = None,
        echo: Callable[[str], None] = print,
        force_prune: bool = False,
    ):
        self.app, self.source, self.prune, self.max_runs, self.echo = app, source, prune, max_runs, echo
        self.force_prune = force_prune
        self.ingestor = ingestor_for(app)
        self.runs = 0
        self.results: list[IngestResult | None] = []
        self._scheduler = BlockingScheduler(timezone=UTC)
        self._stopping = threading.Event()

    def run_once(self) -> IngestResult | None:
        """One scheduled run; a busy store or a broken catalog source is logged, never fatal."""
        if self._stopping.is_set():
            return None
        self.runs += 1
        result = None
        try:
            catalog = self._load()
            if catalog is not None:
                result = self.ingestor.ingest(
                    catalog, prune=self.prune, trigger="schedule", wait=0, force_prune=self.force_prune
                )
                self.echo(result.summary())
        except LockBusy as exc:
            self.echo(f"skipped: {exc}")
        except Exception as exc:  # one failed run must not stop the schedule
            log.exception("scheduled run failed")
            self.echo(f"run failed: {exc}")
        self.results.append(result)
        if self.max_runs is not None and self.runs >= self.max_runs:
            self.stop()
        return result

    def _load(self):
        try:
            return load_catalog(
                self.source, timeout=self.app.settings.url_timeout, deadline=self.app.settings.url_deadline
            )
        except CatalogError as exc:
            run_id = self.app.catalog.record_failed_run(
                "schedule", self.source, self.app.identity.describe(), exc.message
            )
            self.echo(f"run {run_id} failed: {exc}")
            return None

    def start(self, trigger: IntervalTrigger | CronTrigger) -> None:
        """Block until stopped (max runs, SIGTERM or SIGINT: the current batch finishes first)."""
        first = datetime.now(UTC) if isinstance(trigger, IntervalTrigger) else None
        self._scheduler.add_job(
            self.run_once, trigger, next_run_time=first, max_instances=1, coalesce=True, misfire_grace_time=None
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())
        self._scheduler.start()

    def stop(self) -> None:
        self._stopping.set()
        self.ingestor.stop_event.set()
        if self._scheduler.running:
            threading.Thread(target=self._scheduler.shutdown, kwargs={"wait": True}, daemon=True).start()


class ServerSchedule:
    """The schedule inside the server: each tick queues an ingest job of the catalog.

    A tick is skipped while a job of the same catalog is queued or running on any replica, or
    when one was queued less than half a period ago (replicas started at different times would
    otherwise each run it once a period).
    """

    def __init__(
        self,
        source: str,
        every: str | None = None,
        cron: str | None = None,
        prune: bool = False,
        force_prune: bool = False,
    ):
        self.source, self.prune, self.force_prune = source, prune, force_prune
        self.trigger = make_trigger(every, cron)
        self.label = f"{source} ({'every ' + every if every else 'cron ' + str(cron)})"
        self._scheduler = BackgroundScheduler(timezone=UTC)
        self._jobs: JobQueue | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerSchedule | None:
        if not settings.schedule_catalog:
            return None
        return cls(settings.schedule_catalog, settings.schedule_every, settings.schedule_cron, settings.schedule_prune)

    def describe(self) -> str:
        return self.label

    def start(self, jobs: JobQueue) -> None:
        self._jobs = jobs
        first = datetime.now(UTC) if isinstance(self.trigger, IntervalTrigger) else None
        self._scheduler.add_job(
            self.tick, self.trigger, next_run_time=first, max_instances=1, coalesce=True, misfire_grace_time=None
        )
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def tick(self) -> Job | None:
        assert self._jobs is not None
        try:
            active = self._jobs.active_for(self.source)
            if active is not None:
                log.info("schedule: %s is still %s (job %s); tick skipped", self.source, active.status, active.id)
                return None
            if self._jobs.queued_since(self.source, "schedule", datetime.now(UTC) - self._half_period()):
                log.info("schedule: %s ran less than half a period ago (another replica); tick skipped", self.source)
                return None
            params = {"url": self.source} if is_url(self.source) else {"path": self.source}
            job_params: dict[str, Any] = {**params, "prune": self.prune, "force_prune": self.force_prune}
            return self._jobs.submit(JobRequest("ingest", "schedule", self.source, job_params))
        except Exception:  # one failed tick must not stop the schedule
            log.exception("scheduled run could not be queued")
            return None

    def _half_period(self) -> timedelta:
        now = datetime.now(UTC)
        first = self.trigger.get_next_fire_time(None, now)
        second = self.trigger.get_next_fire_time(first, first) if first else None
        if first is None or second is None or second <= first:
            return timedelta(0)
        return (second - first) / 2
