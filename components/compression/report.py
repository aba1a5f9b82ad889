"""The compression report: one table and the accuracy/size and accuracy/latency Pareto plots.

``rows`` are dicts with ``method``, ``test_accuracy``, ``size_bytes``, ``latency_ms_b1``,
``latency_ms_b64`` (and more columns, shown in the table)::

    print(table(rows)); pareto_figure(rows).savefig("pareto.png")
"""

from __future__ import annotations

from typing import Any, Sequence

COLUMNS = (("method", "{}"), ("test_accuracy", "{:.4f}"), ("accuracy_delta_pt", "{:+.2f}"), ("size_bytes", "{:,}"),
           ("size_ratio", "{:.1f}x"), ("latency_ms_b1", "{:.2f}"), ("latency_ms_b64", "{:.2f}"),
           ("speedup_b1", "{:.2f}x"), ("speedup_b64", "{:.2f}x"), ("speedup_vs_compiled_b64", "{:.2f}x"),
           ("version", "{}"), ("fallback", "{}"))


def table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table, one row per variant (the fp32 source first)."""
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    rule = "|" + "---|" * len(COLUMNS)
    body = ["| " + " | ".join("" if r.get(c) is None else fmt.format(r[c]) for c, fmt in COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both cost (lower) and accuracy (higher)."""
    return [i for i, (c, a) in enumerate(points)
            if not any((c2 <= c and a2 >= a) and (c2 < c or a2 > a) for c2, a2 in points)]


def pareto_figure(rows: Sequence[dict[str, Any]]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5))
    for ax, key, label in zip(fig.subplots(1, 2), ("size_bytes", "latency_ms_b64"),
                              ("size on disk (bytes, log)", "latency at batch 64 (ms, log)")):
        points = [(float(r[key]), 100 * float(r["test_accuracy"])) for r in rows]
        front = sorted(pareto_front(points), key=lambda i: points[i][0])
        ax.scatter([p[0] for p in points], [p[1] for p in points], color="tab:blue")
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], color="tab:orange",
                label="Pareto front")
        for r, (x, y) in zip(rows, points):
            ax.annotate(r["method"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle("Compressed variants: accuracy against size and latency")
    fig.tight_layout()
    return fig
