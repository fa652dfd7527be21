"""Prometheus metrics of one server (its own registry, so two apps in one process never share
counters): tiles and detections by source, latency histograms, queue depth, jobs by state,
and the power draw where a sensor reads it.

Names follow the Prometheus naming guide (``_total`` counters, ``_seconds`` histograms, base
units). Gauges that mirror the job store are refreshed when ``/metrics`` is scraped.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from sarvessel.runtime.server.jobs import JobState, JobStore

__all__ = ["CONTENT_TYPE", "Metrics"]

#: Media type of the text exposition.
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Latency buckets (s): from a no-op tile request (~1 ms) to a slow tile row on the board.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0)


class Metrics:
    """The server's collectors. ``power``: register the watts gauge (only where a sensor
    reads: an absent series says "not measured", a zero would lie)."""

    def __init__(self, *, power: bool = False) -> None:
        disable_created_metrics()  # no *_created series: they double every counter
        self.registry = CollectorRegistry()
        r = self.registry
        self.tiles = Counter("sarvessel_tiles", "Tiles run, by source (job or tile API).",
                             ["source"], registry=r)
        self.detections = Counter("sarvessel_detections", "Detections returned, by source.",
                                  ["source"], registry=r)
        self.jobs_finished = Counter("sarvessel_jobs_finished", "Jobs that ended, by state.",
                                     ["state"], registry=r)
        self.http_seconds = Histogram("sarvessel_http_request_duration_seconds",
                                      "HTTP request latency by route, method and status.",
                                      ["route", "method", "status"], buckets=LATENCY_BUCKETS,
                                      registry=r)
        self.tile_batch_seconds = Histogram("sarvessel_tile_batch_seconds",
                                            "Inference + post-processing time of one tile "
                                            "request's batch.", ["backend"],
                                            buckets=LATENCY_BUCKETS, registry=r)
        self.tile_row_seconds = Histogram("sarvessel_job_tile_row_seconds",
                                          "Wall time of one tile row of a scene job.",
                                          buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("sarvessel_queue_depth", "Jobs waiting in the queue.",
                                 registry=r)
        self.jobs = Gauge("sarvessel_jobs", "Jobs in the store, by state.", ["state"],
                          registry=r)
        self.watts = (Gauge("sarvessel_power_watts", "Last measured power draw (W).",
                            registry=r) if power else None)

    # -- what the runner and routes report ------------------------------------------------------

    def tiles_done(self, source: str, n: int) -> None:
        self.tiles.labels(source).inc(n)

    def detections_found(self, source: str, n: int) -> None:
        self.detections.labels(source).inc(n)

    def job_finished(self, state: str, *, detections: int) -> None:
        self.jobs_finished.labels(state).inc()
        if detections:
            self.detections_found("job", detections)

    def row_seconds(self, s: float) -> None:
        self.tile_row_seconds.observe(s)

    def set_watts(self, w: float) -> None:
        if self.watts is not None:
            self.watts.set(w)

    # -- exposition ---------------------------------------------------------------------------

    def render(self, store: JobStore, watts: float | None = None) -> bytes:
        """The text exposition, with the store-backed gauges refreshed first."""
        counts = store.counts()
        self.queue_depth.set(counts[JobState.QUEUED])
        for state, n in counts.items():
            self.jobs.labels(state.value).set(n)
        if watts is not None:
            self.set_watts(watts)
        return generate_latest(self.registry)
