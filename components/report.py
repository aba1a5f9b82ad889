"""A run report: one self-contained HTML page (inline CSS, images as base64) from plain values.

    page = render_report(ReportPage(
        title="quickstart-20261206-235100",
        facts=[("pipeline", "quickstart"), ("command", "visionray run quickstart")],
        headline=headline({"test/accuracy": 0.91, "perf/pipeline_seconds": 83.0}, primary="test/accuracy"),
        stages=[StageRow("train", "FINISHED", {"train/best_val_accuracy": 0.92})],
        pictures=[Picture("train: plots/curves.png", png_bytes)],
        diff=ConfigDiff("champion v1", config_diff(ours, theirs))))
    Path("report.html").write_text(page)

No Ray, no MLflow, no network: whoever calls it gathers the numbers and pictures (the pipelines log
it on the parent run, where MLflow's artifact viewer shows it).
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

__all__ = ["Picture", "StageRow", "ConfigDiff", "ReportPage", "headline", "config_diff", "format_value",
           "picture_order", "render_report"]

_SECRET = re.compile(r"(token|password|passwd|secret|api[_-]?key|credential)", re.IGNORECASE)
#: Figures people look at first, in this order (by file name); any other picture follows, by name. The one
#: picture a pipeline exists for comes first (a sweep's parallel coordinates, compression's Pareto front,
#: an ensemble's members, the zoo, kNN's k, transfer against scratch, an agent's return), then the curves.
FIRST_PICTURES = ("parallel_coordinates.png", "pareto.png", "ensemble_members.png", "zoo_accuracy_vs_params.png",
                  "knn_cv.png", "transfer_vs_scratch.png", "return_curve.png", "episode.gif", "curves.png",
                  "confusion_matrix.png", "per_class_accuracy.png")


@dataclass(frozen=True)
class Picture:
    caption: str
    data: bytes
    mime: str = "image/png"


@dataclass(frozen=True)
class StageRow:
    """One stage's run: its name, MLflow status and final metric values."""

    name: str
    status: str
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ConfigDiff:
    """The config keys that differ from another run's (``against`` says which run, for the reader)."""

    against: str
    rows: Sequence[tuple[str, Any, Any]] = ()  # (dotted key, this run's value, the other run's value)


@dataclass(frozen=True)
class ReportPage:
    title: str
    facts: Sequence[tuple[str, str]] = ()  # label, text: pipeline, command, dataset version, decision
    headline: Sequence[tuple[str, float]] = ()  # metric key, value: the big numbers on top
    stages: Sequence[StageRow] = ()
    pictures: Sequence[Picture] = ()
    diff: ConfigDiff | None = None
    notes: Sequence[str] = ()  # one line each, shown under the headline (what is missing and why)


def _headline_rank(key: str, primary: str | None) -> tuple[int, str]:
    if key == primary:
        return 0, key
    for rank, prefix in enumerate(("test/", "rl/eval_", "train/best_val", "val/", "compress/", "ensemble/",
                                   "sweep/best", "perf/"), start=1):
        if key.startswith(prefix):
            return rank, key
    return 99, key


def headline(metrics: Mapping[str, float], primary: str | None = None, limit: int = 12) -> list[tuple[str, float]]:
    """The run's metrics worth a big number, best first: the primary metric, test metrics, final RL
    returns, best validation, then the rest (per-class accuracies and MLflow's ``system/*`` left out), at
    most ``limit``."""
    keys = [k for k, v in metrics.items() if isinstance(v, (int, float)) and not re.search(r"/accuracy_", k)
            and not k.startswith("system/")]  # MLflow's own machine metrics (CPU, disk) are not results
    return [(k, float(metrics[k])) for k in sorted(keys, key=lambda k: _headline_rank(k, primary))[:limit]]


def config_diff(ours: Mapping[str, Any], theirs: Mapping[str, Any],
                ignore: Sequence[str] = ("resume",)) -> list[tuple[str, Any, Any]]:
    """Flat (dotted-key) configs compared: ``(key, ours, theirs)`` for every key whose values differ
    (None where a side lacks the key), sorted by key; secret-looking keys show ``***``."""
    rows = []
    for key in sorted(set(ours) | set(theirs)):
        if key in ignore or key.split(".")[0] in ignore:
            continue
        a, b = ours.get(key), theirs.get(key)
        if a != b:
            rows.append((key, "***", "***") if _SECRET.search(key) else (key, a, b))
    return rows


def picture_order(path: str) -> tuple[int, str]:
    """Sort key of an artifact path: the figures of :data:`FIRST_PICTURES` first, in that order."""
    leaf = path.rsplit("/", 1)[-1]
    return (FIRST_PICTURES.index(leaf) if leaf in FIRST_PICTURES else len(FIRST_PICTURES), path)


def format_value(key: str, value: Any) -> str:
    """A metric or config value as a person reads it: seconds as minutes, bytes in MB, 4 significant
    digits otherwise."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    leaf = key.rsplit("/", 1)[-1]
    if leaf.endswith(("_seconds", "_s")) and not leaf.endswith("per_s") and v >= 60:
        return f"{int(v // 60)}m {v % 60:04.1f}s"
    if leaf.endswith("_bytes") and v >= 1e5:
        return f"{v / 1e6:.2f} MB"
    if v.is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:.4g}" if abs(v) >= 1e-3 else f"{v:.3e}"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1f2328;max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de}
.facts{color:#59636e;font-size:13px}.facts b{color:#1f2328;font-weight:600}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-top:14px}
.card{border:1px solid #d0d7de;border-radius:8px;padding:8px 12px;min-width:140px}
.card .v{font-size:22px;font-weight:600}.card .k{font-size:12px;color:#59636e}
.card.primary{border-color:#0969da;background:#ddf4ff}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:10px 0 18px}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#59636e}.note{color:#9a6700;font-size:13px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _cards(page: ReportPage) -> str:
    primary = page.headline[0][0] if page.headline else None
    return "".join(
        f'<div class="card{" primary" if k == primary else ""}"><div class="v">{_e(format_value(k, v))}</div>'
        f'<div class="k">{_e(k)}</div></div>' for k, v in page.headline)


def _stages(rows: Sequence[StageRow]) -> str:
    body = []
    for i, row in enumerate(rows, start=1):
        metrics = ", ".join(f"{_e(k)} = {_e(format_value(k, v))}" for k, v in headline(row.metrics, limit=8))
        body.append(f"<tr><td class=n>{i}</td><td>{_e(row.name)}</td><td>{_e(row.status)}</td>"
                    f"<td>{metrics or '—'}</td></tr>")
    return ("<table><tr><th>#</th><th>stage</th><th>status</th><th>headline metrics</th></tr>"
            + "".join(body) + "</table>")


def _diff(diff: ConfigDiff) -> str:
    if not diff.rows:
        return f"<p>Same config as {_e(diff.against)}.</p>"
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(format_value(k, a))}</td><td>{_e(format_value(k, b))}</td></tr>"
                   for k, a, b in diff.rows)
    return (f"<p>{len(diff.rows)} key(s) differ from {_e(diff.against)}.</p>"
            f"<table><tr><th>key</th><th>this run</th><th>{_e(diff.against)}</th></tr>{rows}</table>")


def _picture(p: Picture) -> str:
    data = base64.b64encode(p.data).decode("ascii")
    return (f'<figure><img alt="{_e(p.caption)}" src="data:{_e(p.mime)};base64,{data}">'
            f"<figcaption>{_e(p.caption)}</figcaption></figure>")


def render_report(page: ReportPage) -> str:
    """The page as one HTML string: nothing it shows is fetched from elsewhere."""
    facts = " · ".join(f"{_e(label)} <b>{_e(text)}</b>" for label, text in page.facts)
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(page.title)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>{_e(page.title)}</h1><div class=facts>{facts}</div>",
             f"<div class=cards>{_cards(page)}</div>" if page.headline else "<p>No metrics were logged.</p>"]
    parts += [f"<p class=note>{_e(n)}</p>" for n in page.notes]
    if page.stages:
        parts.append("<h2>Stages</h2>" + _stages(page.stages))
    if page.pictures:
        parts.append("<h2>Figures</h2>" + "".join(_picture(p) for p in page.pictures))
    if page.diff is not None:
        parts.append("<h2>Config against the champion</h2>" + _diff(page.diff))
    parts.append("</body></html>")
    return "\n".join(parts)
