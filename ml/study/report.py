"""The study's report: report.md, report.json and its figures."""

import csv
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml.study.config import ALPHA, Study
from ml.study.plan import Run
from ml.study.stats import _p, condition_summary, test_hypotheses


# ============================================================================= report
def _pct(m: float, s: float | None = None, n: int = 1) -> str:
    if m is None or np.isnan(m):
        return "-"
    return f"{100 * m:.2f} ± {100 * s:.2f}" if n > 1 and s is not None else f"{100 * m:.2f}"


def _num(m: float, s: float | None = None, n: int = 1, digits: int = 0) -> str:
    if m is None or np.isnan(m):
        return "-"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if n > 1 and s is not None else f"{m:.{digits}f}"


def hardware() -> str:
    from ml.bench import device_name

    return f"{device_name(torch.device('cpu'))}, torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.platform()}"


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def write_report(
    study: Study, runs: dict[str, list[Run]], command: str, knock: dict[str, Any] | None, wall_s: float
) -> Path:
    from ml import plots  # noqa: F401  (sets the Agg backend)

    out = study.report_dir
    out.mkdir(parents=True, exist_ok=True)
    summary = condition_summary(study, runs)
    hyps = test_hypotheses(study, runs)
    # ---- CSV
    cols = [
        "condition",
        "trainer",
        "n",
        "accuracy_mean",
        "accuracy_std",
        "macro_f1_mean",
        "macro_f1_std",
        "params",
        "macs",
        "train_s_mean",
        "train_s_std",
        "images_per_s_mean",
        "images_per_s_std",
        "tta",
        "n_val",
    ]
    _write_csv(out / "results.csv", cols, summary)
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["condition", "seed", "accuracy", "macro_f1", "train_s", "images_per_s", "tta", "folder"])
        for c in study.conditions:
            for r in runs[c.name]:
                if r.done:
                    res = r.result()
                    w.writerow(
                        [
                            c.name,
                            r.seed,
                            res["accuracy"],
                            res["macro_f1"],
                            res["train_s"],
                            res["images_per_s"],
                            res.get("tta"),
                            r.folder,
                        ]
                    )
    hcols = [
        "name",
        "h0",
        "baseline",
        "condition",
        "baseline_mean",
        "baseline_std",
        "condition_mean",
        "condition_std",
        "difference",
        "n_seeds",
        "t_p",
        "t_holm",
        "wilcoxon_p",
        "mcnemar_b",
        "mcnemar_c",
        "mcnemar_p",
        "mcnemar_holm",
        "reject",
        "sentence",
    ]
    _write_csv(out / "hypotheses.csv", hcols, hyps)
    # ---- figures
    figures = [_accuracy_figure(summary, out / "accuracy.png")] if summary else []
    if study.transfer:
        fig = _transfer_figure(study, runs, summary, out / "transfer.png")
        if fig:
            figures.append(fig)
    if knock:
        figures.append(_knockout_figure(knock, out / "knockout.png"))
        (out / "knockout.json").write_text(json.dumps({k: v for k, v in knock.items()}, indent=2))
    # ---- markdown
    lines = [f"# Study: {study.name}", ""]
    lines += [f"Config: `{study.config_path}`. Seeds: {', '.join(map(str, study.seeds))}. Hardware: {hardware()}.", ""]
    if study.budget:
        lines += [f"Budget: {study.budget}", ""]
    total_train = sum(
        float(r.result()["train_s"])
        for c in study.conditions
        if c.trainer in ("speedrun", "train")
        for r in runs[c.name]
        if r.done and not np.isnan(float(r.result()["train_s"]))
    )
    lines += [
        f"Training time of this study's runs (sum of epochs, shared runs counted once per study): {total_train / 60:.1f} min; "
        f"this invocation took {wall_s / 60:.1f} min (finished runs are reused, not retrained).",
        "",
        "## Results",
        "",
        "Validation accuracy on each run's own held-out split (mean ± sample std over seeds); training time is the sum "
        "of the epochs' seconds in metrics.csv; images/s is training throughput.",
        "",
        "| condition | trainer | n | top-1 % | macro F1 % | parameters | MACs/image | training s | images/s | TTA | val images |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        n = s["n"]
        lines.append(
            f"| {s['label']} | {s['trainer']} | {n} | {_pct(s['accuracy_mean'], s['accuracy_std'], n)} | "
            f"{_pct(s['macro_f1_mean'], s['macro_f1_std'], n)} | {s['params']:,} | {s['macs'] / 1e6:.1f} M | "
            f"{_num(s['train_s_mean'], s['train_s_std'], n)} | {_num(s['images_per_s_mean'], s['images_per_s_std'], n)} | "
            f"{'-' if s['tta'] is None else s['tta']} | {s['n_val']} |"
        )
    missing = [c.name for c in study.conditions if not any(r.done for r in runs[c.name])]
    if missing:
        lines += ["", f"Not run (yet): {', '.join(missing)}."]
    if hyps:
        lines += [
            "",
            "## Hypotheses",
            "",
            f"Primary test: McNemar's exact test (statsmodels) on the seed-ensembled predictions of the two conditions on "
            f"the same validation images, Holm-corrected across the {len(hyps)} hypotheses, α = {ALPHA}. Check: the paired "
            "t-test over seeds (scipy `ttest_rel`, Holm-corrected too) and Wilcoxon's signed-rank test (exact; below 6 "
            "seeds its smallest possible two-sided p is above 0.05, so it cannot reject).",
            "",
            "| hypothesis | baseline | condition | difference (points) | t-test p (Holm) | Wilcoxon p | McNemar b/c | McNemar p (Holm) | decision |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in hyps:
            lines.append(
                f"| {r['name']} | {r['baseline']} {_pct(r['baseline_mean'], r['baseline_std'], r['n_seeds'])} | "
                f"{r['condition']} {_pct(r['condition_mean'], r['condition_std'], r['n_seeds'])} | {100 * r['difference']:+.2f} | "
                f"{_p(r['t_p'])} ({_p(r['t_holm'])}) | {_p(r['wilcoxon_p'])} | {r['mcnemar_b']}/{r['mcnemar_c']} | "
                f"{_p(r['mcnemar_p'])} ({_p(r['mcnemar_holm'])}) | {'reject H0' if r['reject'] else 'keep H0'} |"
            )
        lines.append("")
        for r in hyps:
            lines += [f"- **{r['name']}**. H0: {r['h0']} {r['sentence']}"]
    if knock:
        lines += [
            "",
            "## Feature-map knock-out (no retraining)",
            "",
            f"Block `{knock['block']}` ({knock['channels']} channels) of `{knock['checkpoint']}`; channel means over "
            f"{knock['images']} training images; intact validation accuracy {100 * knock['intact_accuracy']:.2f}% (TTA {knock['tta']}). "
            "McNemar exact against the intact model, Holm across the rows.",
            "",
            "| zeroed | k | side | accuracy % | drop (points) | McNemar p (Holm) |",
            "|---|---|---|---|---|---|",
        ]
        for r in knock["rows"]:
            lines.append(
                f"| {100 * r['fraction']:.0f}% | {r['k']} | {r['side']} mean | {100 * r['accuracy']:.2f} | "
                f"{100 * r['drop']:.2f} | {_p(r['mcnemar_p'])} ({_p(r['holm_p'])}) |"
            )
    if figures:
        lines += ["", "## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures]
    lines += [
        "",
        "## Reproduce",
        "",
        "```",
        command,
        "```",
        "",
        f"Runs live in `{study.runs_dir}/<trainer>-<hash>/` (result.json, predictions.npz, the run folder); "
        "re-running the command reuses finished runs. Files: results.csv (per condition), runs.csv (per run), "
        "hypotheses.csv" + (", knockout.json" if knock else "") + ".",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    (out / "study.json").write_text(
        json.dumps({"summary": summary, "hypotheses": hyps, "command": command}, indent=2, default=str)
    )
    return path


def _accuracy_figure(summary: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    from ml.plots import _save

    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(summary) + 2), 4))
    x = np.arange(len(summary))
    means = [100 * s["accuracy_mean"] for s in summary]
    stds = [100 * s["accuracy_std"] if s["n"] > 1 else 0 for s in summary]
    ax.bar(x, means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
    for i, s in enumerate(summary):
        ax.scatter([i] * len(s["accuracies"]), [100 * a for a in s["accuracies"]], color="k", s=8, zorder=3)
    ax.set_xticks(x, [s["label"] for s in summary], rotation=30, ha="right")
    ax.set_ylabel("validation top-1 % (mean ± std, dots: seeds)")
    low = min(min(100 * a for a in s["accuracies"]) for s in summary)
    ax.set_ylim(max(0, low - 10), 100)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _transfer_figure(
    study: Study, runs: dict[str, list[Run]], summary: list[dict[str, Any]], path: Path
) -> Path | None:
    import matplotlib.pyplot as plt

    from ml.plots import _save, read_metrics_csv

    names = [n for n in study.transfer.get("conditions", []) if any(r.done for r in runs.get(n, []))]
    if not names:
        return None
    by_name = {s["condition"]: s for s in summary}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(names))
    ax1.bar(
        x,
        [100 * by_name[n]["accuracy_mean"] for n in names],
        yerr=[100 * by_name[n]["accuracy_std"] for n in names],
        capsize=4,
        color="tab:green",
    )
    ax1.set_xticks(x, [by_name[n]["label"] for n in names], rotation=20, ha="right")
    ax1.set_ylabel("validation top-1 %")
    ax1.set_title(study.transfer.get("title", "transfer learning"))
    for i, n in enumerate(names):
        for r in runs[n]:
            if not r.done:
                continue
            csv_path = Path(r.result().get("run_dir", "")) / "metrics.csv"
            if csv_path.is_file():
                m = read_metrics_csv(csv_path)
                ax2.plot(
                    m["epoch"],
                    100 * m["val_acc"],
                    "o-",
                    color=f"C{i}",
                    alpha=0.7,
                    label=n if r.seed == study.seeds[0] else None,
                )
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation top-1 % (TTA 0, during training)")
    ax2.legend()
    ax2.grid(alpha=0.3)
    return _save(fig, path)


def _knockout_figure(knock: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    from ml.plots import _save

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for side, color in (("lowest", "tab:blue"), ("highest", "tab:red")):
        rows = [r for r in knock["rows"] if r["side"] == side]
        ax.plot(
            [0] + [100 * r["fraction"] for r in rows],
            [100 * knock["intact_accuracy"]] + [100 * r["accuracy"] for r in rows],
            "o-",
            color=color,
            label=f"zero the {side}-mean channels",
        )
    ax.set_xlabel(f"% of the {knock['channels']} channels of {knock['block']} zeroed")
    ax.set_ylabel("validation top-1 %")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)
