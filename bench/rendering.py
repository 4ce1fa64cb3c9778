"""The human-readable outputs of a run: a markdown report and a PNG chart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Row = dict[str, Any]

TITLES = {
    "enqueue": "Enqueue throughput (tasks/s, single producer)",
    "process": "Processing throughput (no-op tasks/s, 10%-90% of the drain)",
    "latency": "Latency at a steady rate (ms)",
    "io": "I/O-bound: 100 ms sleeps (tasks/s)",
    "cpu": "CPU-bound: ~10 ms pure Python (tasks/s)",
    "autoscale": "Autoscaling reaction (s)",
    "operator": "Operator scale: 500 TaskQueues + 500 WorkerPools",
    "autoscale-sim": "Autoscaling policy on traces (simulated; replica-s, queueing delay s)",
    "autoscale-replay": "Autoscaling on the real control plane vs the simulator (one bursty trace)",
}
# The metric each chart panel shows (latency shows two).
CHART_METRICS = {
    "enqueue": ["tasks_per_s"],
    "process": ["tasks_per_s"],
    "latency": ["start_p50_ms", "result_p50_ms"],
    "io": ["tasks_per_s"],
    "cpu": ["tasks_per_s"],
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def _table(header: Sequence[str], lines: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(c) for c in line) + " |" for line in lines]
    return out


def workload_table(rows: Sequence[Row]) -> list[str]:
    """One workload's rows as a markdown table (columns: every metric seen)."""
    names: list[str] = []
    for r in rows:
        names += [m for m in r["metrics"] if m not in names]
    lines = [[r["contender"], r["case"], *(r["metrics"].get(m, "") for m in names)] for r in rows]
    return _table(["contender", "case", *names], lines)


def markdown(result: Mapping[str, Any]) -> str:
    """The whole run as markdown: machine, targets, ratios, one table per workload."""
    machine = result["machine"]
    out = [
        f"# Benchmark run {result['date']}" + (" (quick)" if result.get("quick") else ""),
        "",
        f"`{result['command']}` on {machine['nproc']} cores, {machine['memory_gib']} GiB, "
        f"{machine['cpu_model']}, Python {machine['python']}.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()) + ".",
        "",
        "## Targets",
        "",
        *_table(
            ["target", "measured", "verdict"],
            [[t["target"], t["value"], t["verdict"]] for t in result["targets"]],
        ),
        "",
        "## Ratios",
        "",
        *_table(["ratio", "value"], [[r["ratio"], r["value"]] for r in result["ratios"]]),
    ]
    for name, rows in result["workloads"].items():
        out += ["", f"## {TITLES.get(name, name)}", "", *workload_table(rows)]
    return "\n".join(out) + "\n"


def chart(workloads: Mapping[str, Sequence[Row]], path: Path) -> bool:
    """A PNG with one horizontal bar panel per measured workload; False if none applies."""
    panels = [(n, workloads[n]) for n in CHART_METRICS if workloads.get(n)]
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heights = [max(1.6, 0.45 * len(rows) * len(CHART_METRICS[n]) + 0.9) for n, rows in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, sum(heights)), squeeze=False)
    colors = {"celeriac": "#2a9d8f", "raw-nats": "#8d99ae", "celery-redis": "#e76f51"}
    for ax, (name, rows) in zip(axes[:, 0], panels, strict=True):
        labels, values, fills = [], [], []
        for r in rows:
            for m in CHART_METRICS[name]:
                if m in r["metrics"]:
                    suffix = f" [{m.split('_')[0]}]" if len(CHART_METRICS[name]) > 1 else ""
                    labels.append(f"{r['contender']} {r['case']}{suffix}")
                    values.append(float(r["metrics"][m]))
                    fills.append(colors.get(r["contender"], "#999999"))
        bars = ax.barh(labels, values, color=fills)
        ax.bar_label(bars, labels=[_fmt(v) for v in values], padding=3, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(TITLES[name], fontsize=10, loc="left")
        ax.tick_params(axis="y", labelsize=8)
        ax.set_xlim(0, max(values) * 1.2 if values else 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def replica_curves(
    curves: Mapping[str, Mapping[str, Sequence[tuple[float, int]]]],
    path: Path,
    *,
    span: float = 1200.0,
) -> bool:
    """A PNG of replica counts over time, one panel per trace, one step line per contender."""
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {
        "celeriac": "#2a9d8f",
        "celeriac-before": "#8d99ae",
        "keda-default": "#e76f51",
        "keda-tuned": "#f4a261",
    }
    fig, axes = plt.subplots(len(curves), 1, figsize=(10, 2.4 * len(curves)), squeeze=False)
    for ax, (name, lines) in zip(axes[:, 0], curves.items(), strict=True):
        for who, points in lines.items():
            xs = [t for t, _ in points if t <= span] + [span]
            ys = [r for t, r in points if t <= span]
            ys.append(ys[-1] if ys else 0)
            ax.step(xs, ys, where="post", label=who, color=colors.get(who), linewidth=1.2)
        ax.set_title(
            f"{name}: replicas (first {span:.0f} s, 5 s pod start)", fontsize=9, loc="left"
        )
        ax.set_xlim(0, span)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("seconds", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
