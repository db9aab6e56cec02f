"""Run a study (conditions x seeds, described in YAML), test its hypotheses, write the report.

    python -m ml study ml/configs/studies/ablation.yaml              # run what is missing, then report
    python -m ml study ml/configs/studies/comparison.yaml --dry-run  # the plan: runs, done or not, budget
    python -m ml study ml/configs/studies/ablation.yaml --only full,no_bn

The YAML file::

    name: ablation
    seeds: [0, 1, 2]
    report_dir: bundles/default/report/studies/ablation   # default: bundles/default/report/studies/<name>
    runs_dir: runs/studies                                # default
    defaults: {data: ..., precision: auto}                # merged into every trained condition's overrides
    conditions:
      - {name: full, trainer: speedrun, overrides: {epochs: 2}}
      - {name: no_tta, trainer: eval, from: full, tta: 0}
      - {name: ensemble, trainer: ensemble, of: full}      # or checkpoints: bundles/default/members/*.pt
      - {name: ft, trainer: train, overrides: {init_from: "{pretrain}", classes: ...}}
    hypotheses:
      - {name: batch_norm, h0: "...", baseline: full, condition: no_bn}
    knockout: {condition: full, block: blocks.1, fractions: [0.1, 0.25, 0.5], images: 5000}
    transfer: {title: ..., conditions: [scratch, frozen, finetune]}

Trainers: ``speedrun`` (``ml.speedrun.train_one``, SpeedrunConfig fields), ``train`` (``ml.train.train``,
TrainConfig fields), ``eval`` (another condition's checkpoints re-evaluated, e.g. with ``tta: 0``),
``ensemble`` (mean probability of another condition's seeds, or of checkpoint files).
``"{cond}"`` in an override is that condition's checkpoint for the same seed.

Each (condition, seed) runs into ``runs_dir/<trainer>-<hash of trainer, resolved overrides, seed>/``
and writes ``result.json`` and ``predictions.npz`` (validation labels and probabilities) when done;
a folder with ``result.json`` is skipped, so the command resumes, and identical conditions of two
studies share their runs. Every run is evaluated on its own validation split (rebuilt from the
checkpoint's config). Statistics: scipy (paired t-test, Wilcoxon) and statsmodels (McNemar exact,
Holm); see ``hypothesis_test``.
"""

from __future__ import annotations

# The package: config (the YAML file), plan (runs, folders, budget), runs (train or evaluate one
# run), stats (tests and hypotheses), knockout, report, cli. The names below are its interface.
from ml.study.cli import main, run_study
from ml.study.config import ALPHA, TRAINERS, Condition, Study, load_study
from ml.study.knockout import knockout, zero_channels_hook
from ml.study.plan import Run, estimate_s, plan
from ml.study.report import write_report
from ml.study.runs import _DATA_CACHE, checkpoint_probs, execute, scores
from ml.study.stats import condition_summary, holm, hypothesis_test, mcnemar_exact, test_hypotheses

__all__ = [
    "ALPHA",
    "TRAINERS",
    "_DATA_CACHE",
    "Condition",
    "Run",
    "Study",
    "checkpoint_probs",
    "condition_summary",
    "estimate_s",
    "execute",
    "holm",
    "hypothesis_test",
    "knockout",
    "load_study",
    "main",
    "mcnemar_exact",
    "plan",
    "run_study",
    "scores",
    "test_hypotheses",
    "write_report",
    "zero_channels_hook",
]
