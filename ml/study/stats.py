"""Statistics of a study: paired tests, McNemar, Holm, and the hypotheses tested condition against baseline."""

from typing import Any

import numpy as np

from ml.study.config import ALPHA, Study
from ml.study.plan import Run


# ============================================================================= statistics
def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, Any]:
    from ml.compare import mcnemar_exact as m

    return m(correct_a, correct_b)


def hypothesis_test(
    acc_base: list[float], acc_cond: list[float], correct_base: np.ndarray, correct_cond: np.ndarray
) -> dict[str, Any]:
    """Paired tests over seeds (t-test, Wilcoxon; None where n is too small) and McNemar's exact test
    on the seed-ensembled per-image correctness."""
    from scipy import stats

    a, b = np.asarray(acc_base, float), np.asarray(acc_cond, float)
    out: dict[str, Any] = {"n_seeds": int(min(len(a), len(b)))}
    out["t_p"] = out["wilcoxon_p"] = None
    if len(a) == len(b) and len(a) >= 2 and np.any(a != b):
        t = stats.ttest_rel(b, a)
        out["t_stat"], out["t_p"] = float(t.statistic), float(t.pvalue)
        if np.count_nonzero(b - a):
            out["wilcoxon_p"] = float(stats.wilcoxon(b, a).pvalue)
    out["mcnemar"] = mcnemar_exact(correct_base, correct_cond)
    return out


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm-adjusted p-values (statsmodels); None entries stay None and are left out of the family."""
    from statsmodels.stats.multitest import multipletests

    idx = [i for i, p in enumerate(p_values) if p is not None and not np.isnan(p)]
    out: list[float | None] = [None] * len(p_values)
    if idx:
        adjusted = multipletests([p_values[i] for i in idx], alpha=ALPHA, method="holm")[1]
        for i, p in zip(idx, adjusted, strict=True):
            out[i] = float(p)
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


# ============================================================================= analysis
def condition_summary(study: Study, runs: dict[str, list[Run]]) -> list[dict[str, Any]]:
    rows = []
    for c in study.conditions:
        results = [r.result() for r in runs[c.name] if r.done]
        if not results:
            continue
        row: dict[str, Any] = {"condition": c.name, "label": c.label, "trainer": c.trainer, "n": len(results)}
        for key in ("accuracy", "macro_f1", "train_s", "images_per_s"):
            vals = [float(r[key]) for r in results if r.get(key) is not None]
            vals = [v for v in vals if not np.isnan(v)]
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(vals) if vals else (float("nan"), float("nan"))
        row["params"] = results[0]["params"]
        row["macs"] = results[0]["macs"]
        row["tta"] = results[0].get("tta")
        row["n_val"] = results[0]["n_val"]
        row["accuracies"] = [r["accuracy"] for r in results]
        rows.append(row)
    return rows


def ensembled_correct(runs: list[Run]) -> tuple[np.ndarray, np.ndarray]:
    """Per-image correctness of the mean probability over a condition's seeds, and the labels."""
    preds = [np.load(r.folder / "predictions.npz") for r in runs if r.done]
    labels = preds[0]["labels"]
    if any(not np.array_equal(p["labels"], labels) for p in preds):
        raise ValueError("the seeds of one condition were evaluated on different images")
    probs = np.mean([p["probs"] for p in preds], axis=0)
    return probs.argmax(1) == labels, labels


def _seedless(runs: list[Run]) -> bool:
    return len(runs) == 1 and runs[0].seed is None


def test_hypotheses(study: Study, runs: dict[str, list[Run]]) -> list[dict[str, Any]]:
    rows = []
    for h in study.hypotheses:
        base, cond = runs[h["baseline"]], runs[h["condition"]]
        if not base or not cond or not all(r.done for r in base + cond):
            continue
        by_seed_b = {r.seed: r.result()["accuracy"] for r in base}
        by_seed_c = {r.seed: r.result()["accuracy"] for r in cond}
        seeds = [s for s in by_seed_b if s in by_seed_c and s is not None]
        against = "the seed-ensembled predictions"
        if _seedless(base) != _seedless(cond):
            # One model (an ensemble) against a seeded condition: the seed-ensembled predictions of
            # the seeds would be that very ensemble, so McNemar compares it with the best seed, and
            # a one-sample t-test asks whether the seeds' accuracies reach the single model's.
            from scipy import stats

            many, one = (base, cond) if _seedless(cond) else (cond, base)
            best = max(many, key=lambda r: r.result()["accuracy"])
            against = f"the best seed ({best.seed})"
            cb, lb = ensembled_correct([best] if many is base else base)
            cc, lc = ensembled_correct([best] if many is cond else cond)
            test = hypothesis_test([], [], cb, cc)
            accs = [r.result()["accuracy"] for r in many]
            if len(accs) >= 2 and np.std(accs) > 0:
                test["t_p"] = float(stats.ttest_1samp(accs, one[0].result()["accuracy"]).pvalue)
                test["n_seeds"] = len(accs)
        else:
            cb, lb = ensembled_correct(base)
            cc, lc = ensembled_correct(cond)
            test = hypothesis_test([by_seed_b[s] for s in seeds], [by_seed_c[s] for s in seeds], cb, cc)
        if not np.array_equal(lb, lc):
            raise ValueError(f"hypothesis {h['name']}: the two conditions were not evaluated on the same images")
        mb, sb = mean_std(list(by_seed_b.values()))
        mc, sc = mean_std(list(by_seed_c.values()))
        rows.append(
            {
                "name": h["name"],
                "h0": h["h0"],
                "baseline": h["baseline"],
                "condition": h["condition"],
                "baseline_mean": mb,
                "baseline_std": sb,
                "condition_mean": mc,
                "condition_std": sc,
                "difference": mc - mb,
                "n_seeds": test["n_seeds"],
                "t_p": test["t_p"],
                "wilcoxon_p": test["wilcoxon_p"],
                "mcnemar_b": test["mcnemar"]["b"],
                "mcnemar_c": test["mcnemar"]["c"],
                "mcnemar_p": test["mcnemar"]["p_value"],
                "ensembled_baseline": float(cb.mean()),
                "ensembled_condition": float(cc.mean()),
                "mcnemar_against": against,
                # the meaning of a rejection may depend on the direction of the difference
                "meaning_reject": h.get("reject_higher" if mc > mb else "reject_lower", "") or h.get("reject", ""),
                "meaning_keep": h.get("keep", ""),
            }
        )
    for key in ("mcnemar_p", "t_p"):
        for r, p in zip(rows, holm([r[key] for r in rows]), strict=True):
            r[f"{key.split('_')[0]}_holm"] = p
    for r in rows:
        r["reject"] = r["mcnemar_holm"] is not None and r["mcnemar_holm"] < ALPHA
        r["seeds_agree"] = r["t_holm"] is not None and r["t_holm"] < ALPHA
        r["sentence"] = _sentence(r)
    return rows


def _p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.3g}" if p >= 0.001 else f"{p:.1e}"


def _sentence(r: dict[str, Any]) -> str:
    diff = 100 * r["difference"]
    direction = "higher" if diff > 0 else "lower"
    if r["reject"]:
        head = f"Reject H0: {r['condition']} is {abs(diff):.2f} points {direction} than {r['baseline']} (Holm-adjusted McNemar p = {_p(r['mcnemar_holm'])})"
        tail = r["meaning_reject"] or f"the change from {r['baseline']} to {r['condition']} matters for accuracy"
    else:
        head = f"Keep H0: the {abs(diff):.2f}-point difference could be chance (Holm-adjusted McNemar p = {_p(r['mcnemar_holm'])})"
        tail = r["meaning_keep"] or f"at this budget {r['condition']} cannot be told apart from {r['baseline']}"
    if r.get("mcnemar_against", "").startswith("the best seed"):
        head += f" (McNemar against {r['mcnemar_against']} of the seeded condition)"
        test = "the one-sample t-test of the"
    else:
        test = "the paired t-test over"
    seeds = f"; {test} {r['n_seeds']} seeds gives Holm p = {_p(r['t_holm'])}" if r["t_p"] is not None else ""
    return f"{head}{seeds}: {tail}."
