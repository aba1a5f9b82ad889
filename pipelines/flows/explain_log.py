"""What the explain pipeline logs from each part's result (metrics, the table, figures), on the active run.

    LOGGERS["adversarial"](result, classes)     # explain/adv_accuracy at step 1000·ε, grids, the curve
    summary(results, name, version)             # the numbers of explain/summary.json

Used by pipelines.flows.explain once a part's Ray task is back.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from pipelines.services import names, tracking
from pipelines.services.progress import say


def eps_step(eps: float) -> int:
    """MLflow steps are integers: ε in thousandths (step 100 is ε = 0.1)."""
    return int(round(1000 * eps))


def log_attributions(result: dict[str, Any], classes: Sequence[str]) -> None:
    from components.explain.figures import attribution_figure, faithfulness_figure

    rows = result["rows"]
    tracking.log_table(rows, names.EXPLAIN_FAITHFULNESS_TABLE)
    metrics = {}
    for row in rows:
        for key in ("deletion_auc", "insertion_auc", "pointing_game"):
            if key in row:
                metrics[names.explain_method_metric(key, row["method"])] = row[key]
    tracking.log_metrics(metrics)
    best = next(r for r in rows if r["method"] != "random")
    tracking.set_tags({names.EXPLAIN_BEST_METHOD_TAG: best["method"]})
    tracking.log_figure(attribution_figure(result["images"], result["maps"], result["labels"], classes,
                                           "what each method says the true class rests on"),
                        names.EXPLAIN_ATTRIBUTION_PLOT)
    tracking.log_figure(faithfulness_figure(rows), names.EXPLAIN_FAITHFULNESS_PLOT)
    for row in rows:
        point = f", pointing game {row['pointing_game']:.3f}" if "pointing_game" in row else ""
        say(f"explain: #{row['rank']} {row['method']}: deletion AUC {row['deletion_auc']:.4f}, insertion AUC "
            f"{row['insertion_auc']:.4f}{point} ({row['seconds']:.0f} s)")


def log_adversarial(result: dict[str, Any], classes: Sequence[str]) -> None:
    from components.explain.figures import accuracy_vs_eps_figure, grid

    for eps, fgsm, pgd in zip(result["eps"], result["accuracy"]["fgsm"], result["accuracy"]["pgd"]):
        tracking.log_metrics({names.EXPLAIN_ADV_ACCURACY: fgsm, names.EXPLAIN_PGD_ACCURACY: pgd}, step=eps_step(eps))
    tracking.log_metrics({names.EXPLAIN_CLEAN_ACCURACY: result["accuracy"]["fgsm"][0],
                          names.EXPLAIN_LOSS_CLEAN: result["loss_clean"], names.EXPLAIN_LOSS_FGSM: result["loss_fgsm"]})
    tracking.log_figure(accuracy_vs_eps_figure(result["eps"], result["accuracy"]), names.EXPLAIN_ADV_CURVE_PLOT)
    titles = [f"{t}\n{sum(p == int(y) for p, y in zip(result['predictions'][t], result['labels']))}/"
              f"{len(result['labels'])} right" for t in result["titles"]]
    tracking.log_figure(grid(result["rows"], titles, result["labels"], classes, "adversarial examples (true class above)"),
                        names.EXPLAIN_ADVERSARIAL_PLOT)
    if result["fooling"] is not None:
        tracking.log_metrics({names.EXPLAIN_FOOLING_CONFIDENCE_MIN: min(result["fooling_confidence"])})
        tracking.log_figure(grid([result["fooling"]], ["fooling"], result["fool_classes"], classes,
                                 "noise the model calls each class with ≥ "
                                 f"{min(result['fooling_confidence']):.3f} confidence"), names.EXPLAIN_FOOLING_PLOT)
    curve = ", ".join(f"ε={e:g}: FGSM {f:.3f} / PGD {p:.3f}" for e, f, p in
                      zip(result["eps"], result["accuracy"]["fgsm"], result["accuracy"]["pgd"]))
    say(f"explain: accuracy {curve}; loss {result['loss_clean']:.3f} → {result['loss_fgsm']:.3f} under FGSM "
        f"ε={result['loss_fgsm_eps']:g}")


def log_class_models(result: dict[str, Any], classes: Sequence[str]) -> None:
    from components.explain.figures import grid

    probs = result["probabilities"]
    tracking.log_metrics({names.EXPLAIN_CLASS_MODEL_CONFIDENCE: float(np.mean(probs))})
    tracking.log_figure(grid([result["images"]], ["class model"], list(range(len(probs))), classes,
                             "gradient ascent on each class score (L2 decay, blur, jitter)"),
                        names.EXPLAIN_CLASS_MODELS_PLOT)


def log_features(result: dict[str, Any], classes: Sequence[str]) -> None:
    from components.explain.figures import embedding_figure, grid

    metrics = {names.EXPLAIN_FEATURE_KNN: result["knn_full"], names.EXPLAIN_PIXEL_KNN: result["knn_pixels"],
               names.EXPLAIN_EMBEDDED_POINTS: result["points"],
               names.EXPLAIN_NEIGHBOUR_AGREEMENT_FEATURE: result["neighbours"]["feature_agreement"],
               names.EXPLAIN_NEIGHBOUR_AGREEMENT_PIXEL: result["neighbours"]["pixel_agreement"]}
    for which, points in result["maps"].items():
        metrics[names.explain_embedding_metric(which, "knn_accuracy")] = result["knn"][which]
        metrics[names.explain_embedding_metric(which, "trustworthiness")] = result["trustworthiness"][which]
        metrics[names.explain_embedding_metric(which, "seconds")] = result["seconds"][which]
        title = (f"{which} of {result['points']:,} penultimate features ({result['dims']}-D): 5-NN accuracy "
                 f"{result['knn'][which]:.3f} in 2-D, {result['knn_full']:.3f} in full")
        tracking.log_figure(embedding_figure(points, result["labels"], classes, title),
                            names.explain_embedding_plot(which))
        say(f"explain: {which}: {result['seconds'][which]:.0f} s for {result['points']:,} points, kNN accuracy "
            f"{result['knn'][which]:.4f} in 2-D vs {result['knn_full']:.4f} in {result['dims']}-D "
            f"(pixels {result['knn_pixels']:.4f}), trustworthiness {result['trustworthiness'][which]:.4f}")
    tracking.log_metrics(metrics)
    nb = result["neighbours"]
    rows, titles = [], []
    for q in range(len(nb["queries"])):
        rows += [nb["feature_images"][q], nb["pixel_images"][q]]
        titles += [f"query {q + 1}\nfeatures", "pixels"]
    tracking.log_figure(grid(rows, titles, title="the query (first) and its nearest neighbours: in feature space, "
                                                  "then in pixel space"), names.EXPLAIN_NEIGHBOURS_PLOT)


LOGGERS: dict[str, Callable[[dict[str, Any], Sequence[str]], None]] = {
    "attributions": log_attributions, "adversarial": log_adversarial, "class_models": log_class_models,
    "features": log_features}


def summary(results: dict[str, Any], name: str, version: int) -> dict[str, Any]:
    adv, feats, attr = results["adversarial"], results["features"], results["attributions"]
    at = {e: i for i, e in enumerate(adv["eps"])}
    return {"model": f"{name}/{version}", "ranking": [{k: v for k, v in r.items()} for r in attr["rows"]],
            "clean_accuracy": adv["accuracy"]["fgsm"][0],
            "fgsm_accuracy": dict(zip(map(str, adv["eps"]), adv["accuracy"]["fgsm"])),
            "pgd_accuracy": dict(zip(map(str, adv["eps"]), adv["accuracy"]["pgd"])),
            "fgsm_at_0.1": adv["accuracy"]["fgsm"][at[0.1]] if 0.1 in at else None,
            "knn_full": feats["knn_full"], "knn_2d": feats["knn"], "trustworthiness": feats["trustworthiness"],
            "embedding_seconds": feats["seconds"], "points": feats["points"],
            "fooling_confidence": adv["fooling_confidence"],
            "class_model_confidence": results["class_models"]["probabilities"],
            "part_seconds": {k: v["wall_seconds"] for k, v in results.items()}}


def headline(s: dict[str, Any]) -> str:
    best = next(r for r in s["ranking"] if r["method"] != "random")
    fgsm = f", FGSM ε=0.1 {s['fgsm_at_0.1']:.4f}" if s["fgsm_at_0.1"] is not None else ""
    return (f"clean accuracy {s['clean_accuracy']:.4f}{fgsm}; best attribution by deletion AUC: {best['method']} "
            f"({best['deletion_auc']:.4f}); t-SNE kNN {s['knn_2d'].get('tsne', float('nan')):.4f} vs "
            f"{s['knn_full']:.4f} full")
