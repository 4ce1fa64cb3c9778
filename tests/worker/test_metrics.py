"""The worker's metrics: plain counts exposed in the Prometheus text format."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from celeriac.worker_runtime.metrics import WorkerMetrics


def _samples(metrics: WorkerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_counts_are_kept_per_queue_and_task() -> None:
    metrics = WorkerMetrics()
    metrics.of("q", "a").received.inc()
    metrics.of("q", "a").received.inc()
    metrics.of("q", "b").failed.inc()
    samples = _samples(metrics)
    a = (("queue", "q"), ("task", "a"))
    b = (("queue", "q"), ("task", "b"))
    assert samples[("celeriac_worker_tasks_received_total", a)] == 2
    assert samples[("celeriac_worker_tasks_received_total", b)] == 0
    assert samples[("celeriac_worker_tasks_failed_total", b)] == 1
    assert metrics.of("q", "a") is metrics.of("q", "a")


def test_durations_form_a_cumulative_histogram() -> None:
    metrics = WorkerMetrics()
    durations = metrics.of("q", "t").duration
    for seconds in (0.001, 0.005, 0.3, 2.0, 5000.0):
        durations.observe(seconds)
    samples = _samples(metrics)
    labels = (("queue", "q"), ("task", "t"))

    def bucket(le: str) -> float:
        return samples[("celeriac_worker_task_duration_seconds_bucket", (("le", le), *labels))]

    # A value equal to a bound counts in that bucket (le means "less or equal").
    assert bucket("0.005") == 2
    assert bucket("0.25") == 2
    assert bucket("0.5") == 3
    assert bucket("2.5") == 4
    assert bucket("900.0") == 4
    assert bucket("+Inf") == 5
    assert samples[("celeriac_worker_task_duration_seconds_count", labels)] == 5
    assert samples[("celeriac_worker_task_duration_seconds_sum", labels)] == 5002.306


def test_in_flight_is_read_when_scraped() -> None:
    metrics = WorkerMetrics()
    held = [1, 2]
    metrics.count_in_flight(lambda: len(held))
    assert _samples(metrics)[("celeriac_worker_tasks_in_flight", ())] == 2
    held.clear()
    assert _samples(metrics)[("celeriac_worker_tasks_in_flight", ())] == 0
