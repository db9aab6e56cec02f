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

import argparse
import copy
import csv
import glob
import hashlib
import json
import platform
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

ALPHA = 0.05
TRAINERS = ("speedrun", "train", "eval", "ensemble")
REF = re.compile(r"^\{([A-Za-z0-9_\-]+)\}$")


# ============================================================================= config
@dataclass
class Condition:
    name: str
    trainer: str
    overrides: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # eval: the condition re-evaluated; ensemble: the condition whose seeds are averaged
    tta: int | None = None  # evaluation TTA level (speedrun default: its config's tta; train: 0)
    checkpoints: str = ""  # ensemble: a glob of checkpoint files instead of ``of``
    label: str = ""  # text for tables and figures


@dataclass
class Study:
    name: str
    seeds: list[int]
    conditions: list[Condition]
    hypotheses: list[dict[str, Any]] = field(default_factory=list)
    knockout: dict[str, Any] | None = None
    transfer: dict[str, Any] | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    report_dir: Path = Path()
    runs_dir: Path = Path("runs/studies")
    config_path: str = ""
    budget: str = ""  # the config's stated budget, quoted in the report

    def condition(self, name: str) -> Condition:
        for c in self.conditions:
            if c.name == name:
                return c
        raise ValueError(f"study {self.name}: no condition named {name!r}")


def load_study(path: str | Path) -> Study:
    raw = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(raw, dict) or "name" not in raw or "conditions" not in raw:
        raise ValueError(f"{path}: a study needs a name and a list of conditions")
    conditions = []
    for item in raw["conditions"]:
        item = dict(item)
        trainer = item.get("trainer")
        if trainer not in TRAINERS:
            raise ValueError(f"condition {item.get('name')!r}: trainer must be one of {', '.join(TRAINERS)}")
        conditions.append(
            Condition(
                name=str(item["name"]),
                trainer=trainer,
                overrides=dict(item.get("overrides") or {}),
                source=str(item.get("from") or item.get("of") or ""),
                tta=item.get("tta"),
                checkpoints=str(item.get("checkpoints") or ""),
                label=str(item.get("label") or item["name"]),
            )
        )
    name = str(raw["name"])
    study = Study(
        name=name,
        seeds=[int(s) for s in raw.get("seeds", [0])],
        conditions=conditions,
        hypotheses=list(raw.get("hypotheses") or []),
        knockout=raw.get("knockout"),
        transfer=raw.get("transfer"),
        defaults=dict(raw.get("defaults") or {}),
        report_dir=Path(raw.get("report_dir") or f"bundles/default/report/studies/{name}"),
        runs_dir=Path(raw.get("runs_dir") or "runs/studies"),
        config_path=str(path),
        budget=str(raw.get("budget") or ""),
    )
    names = [c.name for c in conditions]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: condition names must be unique")
    for i, c in enumerate(conditions):
        refs = [c.source] if c.trainer in ("eval", "ensemble") and c.source else []
        refs += [m[1] for v in c.overrides.values() if isinstance(v, str) and (m := REF.match(v))]
        for ref in refs:
            if ref not in names[:i]:
                raise ValueError(f"condition {c.name!r} refers to {ref!r}, which must be an earlier condition")
        if c.trainer == "eval" and not c.source:
            raise ValueError(f"condition {c.name!r}: trainer eval needs from: <condition>")
        if c.trainer == "ensemble" and not (c.source or c.checkpoints):
            raise ValueError(f"condition {c.name!r}: trainer ensemble needs of: <condition> or checkpoints: <glob>")
    for h in study.hypotheses:
        for key in ("name", "h0", "baseline", "condition"):
            if key not in h:
                raise ValueError(f"hypothesis {h!r} lacks {key!r}")
        study.condition(h["baseline"])
        study.condition(h["condition"])
    return study


# ============================================================================= plan
def _hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


@dataclass
class Run:
    condition: Condition
    seed: int | None  # None: a seedless condition (an ensemble of files)
    folder: Path
    spec: dict[str, Any]  # what the hash covers

    @property
    def done(self) -> bool:
        return (self.folder / "result.json").is_file()

    def result(self) -> dict[str, Any]:
        return json.loads((self.folder / "result.json").read_text())

    def checkpoint(self) -> str:
        return self.result()["checkpoint"]


def plan(study: Study) -> dict[str, list[Run]]:
    """Every condition's runs, in order; references resolve to the referenced run's checkpoint path
    (``<its folder>/checkpoint.pt`` is recorded in its result, so the hash uses the folder)."""
    runs: dict[str, list[Run]] = {}
    for c in study.conditions:
        runs[c.name] = []
        if c.trainer == "ensemble" and c.checkpoints:
            files = sorted(glob.glob(c.checkpoints))
            if not files:  # e.g. the shipped members are not in this checkout: reported as not run
                print(f"condition {c.name}: no checkpoint matches {c.checkpoints}; left out")
                continue
            spec = {"trainer": "ensemble", "files": files, "tta": c.tta}
            runs[c.name].append(Run(c, None, study.runs_dir / f"ensemble-{_hash(spec)}", spec))
            continue
        if c.trainer == "ensemble":
            members = [str(r.folder) for r in runs[c.source]]
            spec = {"trainer": "ensemble", "members": members}
            runs[c.name].append(Run(c, None, study.runs_dir / f"ensemble-{_hash(spec)}", spec))
            continue
        for i, seed in enumerate(study.seeds):
            if c.trainer == "eval":
                spec = {"trainer": "eval", "from": str(runs[c.source][i].folder), "tta": c.tta}
            else:
                overrides = {**study.defaults, **c.overrides}
                for key, value in overrides.items():
                    m = REF.match(value) if isinstance(value, str) else None
                    if m:
                        overrides[key] = f"@{runs[m[1]][i].folder}"
                spec = {"trainer": c.trainer, "overrides": overrides, "seed": seed, "tta": c.tta}
            runs[c.name].append(Run(c, seed, study.runs_dir / f"{c.trainer}-{_hash(spec)}", spec))
    return runs


def _resolve_refs(overrides: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in overrides.items():
        if isinstance(value, str) and value.startswith("@"):
            ref = Path(value[1:]) / "result.json"
            if not ref.is_file():
                raise RuntimeError(f"{key}: the referenced run {value[1:]} has not finished")
            value = json.loads(ref.read_text())["checkpoint"]
        out[key] = value
    return out


def _as_overrides(values: dict[str, Any]) -> list[str]:
    return [f"{k}={v}" for k, v in values.items()]


# ============================================================================= data and evaluation
_DATA_CACHE: dict[str, Any] = {}


def val_data(ckpt: dict[str, Any]):
    """The checkpoint's own validation split (cached per data key)."""
    from ml.evaluate import data_spec_of, load_eval_data

    spec = data_spec_of(ckpt)
    key = json.dumps(spec, sort_keys=True, default=str)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = load_eval_data(spec, "val")
    return _DATA_CACHE[key]


def checkpoint_probs(path: str | Path, tta: int, hooks: list[Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, labels) of a checkpoint on its validation split, with TTA level ``tta``."""
    from ml import precision as prec
    from ml.checkpoint import load_model
    from ml.speedrun import evaluate_logits

    model, ckpt = load_model(path)
    dataset, _ = val_data(ckpt)
    for register in hooks or []:
        register(model)
    dtype = prec.resolve((ckpt.get("config") or {}).get("precision", "auto"), torch.device("cpu"))
    logits = evaluate_logits(
        model, torch.from_numpy(dataset.images), torch.tensor(ckpt["mean"]), torch.tensor(ckpt["std"]), tta, dtype
    )
    return torch.softmax(logits.float(), 1).double().numpy(), np.asarray(dataset.labels, dtype=np.int64)


def scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import f1_score

    pred = probs.argmax(1)
    return {
        "accuracy": float((pred == labels).mean()),
        "macro_f1": float(f1_score(labels, pred, average="macro", labels=np.arange(probs.shape[1]), zero_division=0)),
    }


def training_time(run_dir: Path) -> tuple[float, float]:
    """(sum of epoch_s, images/s over the whole run) from metrics.csv."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return float("nan"), float("nan")
    total, images = 0.0, 0.0
    with open(path) as f:
        for row in csv.DictReader(f):
            total += float(row["epoch_s"])
            images += float(row["epoch_s"]) * float(row["images_per_s"])
    return total, (images / total if total else float("nan"))


# ============================================================================= execution
def execute(run: Run, runs: dict[str, list[Run]]) -> dict[str, Any]:
    """Train (or evaluate) one run and write result.json + predictions.npz into its folder."""
    c = run.condition
    run.folder.mkdir(parents=True, exist_ok=True)
    (run.folder / "spec.json").write_text(json.dumps(run.spec, indent=2, default=str))
    t0 = time.perf_counter()
    result: dict[str, Any] = {"condition": c.name, "trainer": c.trainer, "seed": run.seed}
    if c.trainer in ("speedrun", "train"):
        overrides = _resolve_refs(run.spec["overrides"])
        ckpt_path, tta = _train(c.trainer, overrides, run.seed, run.folder, c.tta)
        probs, labels = checkpoint_probs(ckpt_path, tta)
        result.update(_describe_checkpoint(ckpt_path))
        result["tta"] = tta
    elif c.trainer == "eval":
        source = json.loads((Path(run.spec["from"]) / "result.json").read_text())
        tta = source["tta"] if c.tta is None else int(c.tta)
        ckpt_path = source["checkpoint"]
        probs, labels = checkpoint_probs(ckpt_path, tta)
        result.update({k: source[k] for k in ("checkpoint", "run_dir", "params", "macs", "train_s", "images_per_s")})
        result["tta"] = tta
        result["evaluated_from"] = run.spec["from"]
    else:
        members = run.spec.get("members")
        if members is not None:
            parts = [json.loads((Path(m) / "result.json").read_text()) for m in members]
            preds = [np.load(Path(m) / "predictions.npz") for m in members]
            labels = preds[0]["labels"]
            if any(not np.array_equal(p["labels"], labels) for p in preds):
                raise ValueError(f"{c.name}: the members were not evaluated on the same images")
            probs = np.mean([p["probs"] for p in preds], axis=0)
        else:
            files = run.spec["files"]
            if not files:
                raise FileNotFoundError(f"{c.name}: no checkpoint matches {c.checkpoints}")
            parts, all_probs, labels = [], [], None
            for f in files:
                p, lab = checkpoint_probs(f, int(c.tta or 0))
                if labels is not None and not np.array_equal(lab, labels):
                    raise ValueError(f"{c.name}: {f} has another validation split than the first member")
                labels = lab
                all_probs.append(p)
                parts.append(_describe_checkpoint(f))
            probs = np.mean(all_probs, axis=0)
        result.update(
            {
                "members": [p["checkpoint"] for p in parts],
                "params": sum(p["params"] for p in parts),
                "macs": sum(p["macs"] for p in parts),
                "train_s": sum(p["train_s"] for p in parts),
                "images_per_s": float("nan"),
                "checkpoint": "",
            }
        )
    result.update(scores(probs, labels))
    result["n_val"] = int(len(labels))
    result["wall_s"] = time.perf_counter() - t0
    np.savez_compressed(run.folder / "predictions.npz", probs=probs.astype(np.float32), labels=labels)
    (run.folder / "result.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def _describe_checkpoint(path: str | Path) -> dict[str, Any]:
    from ml.checkpoint import read_checkpoint
    from ml.evaluate import member_info

    ckpt = read_checkpoint(path)
    info = member_info(ckpt, path)
    train_s, ips = training_time(Path(path).parent)
    return {
        "checkpoint": str(path),
        "run_dir": str(Path(path).parent),
        "arch": info["arch"],
        "params": info["params"],
        "macs": info["macs"],
        "train_s": train_s,
        "images_per_s": ips,
    }


def _train(trainer: str, overrides: dict[str, Any], seed: int, folder: Path, tta: int | None) -> tuple[str, int]:
    """Run the trainer into ``folder``; returns (checkpoint path, evaluation TTA level)."""
    from ml.train import TrainConfig, load_config, train

    common = {"out_dir": str(folder), "progress": False}
    if trainer == "speedrun":
        from ml.data import load_source, stratified_split
        from ml.speedrun import SpeedrunConfig, train_one

        cfg = load_config(
            None, _as_overrides({**overrides, **common, "name": "run", "seeds": seed}), cls=SpeedrunConfig
        )
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        data = load_source(cfg.data, split="train")
        train_idx, val_idx = stratified_split(data.labels, cfg.val_per_class, cfg.split_seed)
        if cfg.train_limit:  # as python -m ml speedrun does
            train_idx = np.random.default_rng(0).permutation(train_idx)[: cfg.train_limit]
        result = train_one(cfg, seed, data, train_idx, val_idx)
        return str(Path(result["run_dir"]) / "checkpoint.pt"), cfg.tta if tta is None else int(tta)
    cfg = load_config(None, _as_overrides({**overrides, **common, "name": "run", "seed": seed, "tensorboard": False}))
    assert isinstance(cfg, TrainConfig)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    result = train(cfg)
    return str(Path(result["run_dir"]) / "checkpoint.pt"), 0 if tta is None else int(tta)


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


# ============================================================================= knock-out
def channel_means(model: torch.nn.Module, block: str, images: torch.Tensor, mean, std) -> torch.Tensor:
    """Mean activation of each output channel of ``block`` over ``images`` (uint8), in eval mode."""
    from ml.augment import normalize

    module = model.get_submodule(block)
    sums: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: sums.append(out.float().mean(dim=(2, 3)).sum(0)))
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(images), 500):
                model(normalize(images[i : i + 500], mean, std))
    finally:
        handle.remove()
    return torch.stack(sums).sum(0) / len(images)


def zero_channels_hook(block: str, channels: torch.Tensor):
    """A function that registers a forward hook zeroing ``channels`` of ``block``'s output."""
    idx = torch.as_tensor(channels, dtype=torch.long)

    def register(model: torch.nn.Module):
        def hook(_m, _i, out):
            out = out.clone()
            out[:, idx] = 0
            return out

        return model.get_submodule(block).register_forward_hook(hook)

    return register


def knockout(cfg: dict[str, Any], ckpt_path: str) -> dict[str, Any]:
    """Zero the k lowest- and k highest-mean channels of ``cfg['block']`` (no retraining)."""
    from ml.checkpoint import load_model
    from ml.data import stratified_split
    from ml.evaluate import data_spec_of, load_eval_data

    block = cfg.get("block", "blocks.1")
    fractions = [float(f) for f in cfg.get("fractions", [0.1, 0.25, 0.5])]
    tta = int(cfg.get("tta", 0))
    model, ckpt = load_model(ckpt_path)
    spec = data_spec_of(ckpt)
    full, _ = load_eval_data(spec, "all")
    train_idx, _ = stratified_split(full.labels, spec["val_per_class"], spec.get("split_seed", 0))
    n_images = int(cfg.get("images", 5000))
    pick = np.random.default_rng(0).permutation(train_idx)[:n_images]
    means = channel_means(
        model, block, torch.from_numpy(full.images[pick]), torch.tensor(ckpt["mean"]), torch.tensor(ckpt["std"])
    )
    order = torch.argsort(means)
    n_ch = len(means)
    intact, labels = checkpoint_probs(ckpt_path, tta)
    correct0 = intact.argmax(1) == labels
    rows = []
    for frac in fractions:
        k = max(1, int(round(frac * n_ch)))
        for side, chans in (("lowest", order[:k]), ("highest", order[-k:])):
            probs, _ = checkpoint_probs(ckpt_path, tta, hooks=[zero_channels_hook(block, chans)])
            correct = probs.argmax(1) == labels
            test = mcnemar_exact(correct0, correct)
            rows.append(
                {
                    "fraction": frac,
                    "k": k,
                    "side": side,
                    "accuracy": float(correct.mean()),
                    "drop": float(correct0.mean() - correct.mean()),
                    "mcnemar_p": test["p_value"],
                    "b": test["b"],
                    "c": test["c"],
                }
            )
    adjusted = holm([r["mcnemar_p"] for r in rows])
    for r, p in zip(rows, adjusted, strict=True):
        r["holm_p"] = p
    return {
        "checkpoint": ckpt_path,
        "block": block,
        "channels": n_ch,
        "images": len(pick),
        "tta": tta,
        "intact_accuracy": float(correct0.mean()),
        "channel_means": means.tolist(),
        "rows": rows,
    }


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
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(summary)
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
    with open(out / "hypotheses.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=hcols, extrasaction="ignore")
        w.writeheader()
        w.writerows(hyps)
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


# ============================================================================= budget
def estimate_s(run: Run) -> float:
    """A rough CPU estimate (2 cores, bf16): the fast net ~950 images/s, ResNet-20 ~475, plain CNN ~950."""
    c = run.condition
    if c.trainer in ("eval", "ensemble"):
        return 15.0
    o = run.spec["overrides"]
    per_class_train = 4500 if o.get("val_per_class", 500) == 500 else 5000 - int(o.get("val_per_class", 500))
    n_classes = len([s for s in str(o.get("classes", "")).split(",") if s]) or 10
    images = int(o.get("train_limit") or per_class_train * n_classes)
    epochs = float(o.get("epochs", 10 if c.trainer == "speedrun" else 30))
    if c.trainer == "speedrun":
        rate = 950 / max(0.25, float(o.get("width", 1.0)))
    else:
        rate = {"plain_cnn": 950, "resnet20": 475}.get(str(o.get("model", "resnet20")), 300)
        if str(o.get("freeze", "")) == "backbone":
            rate *= 2.5
    return images * epochs / rate + 15.0


# ============================================================================= CLI
def run_study(study: Study, only: list[str] | None = None, dry_run: bool = False, command: str = "") -> Path | None:
    runs = plan(study)
    wanted = set(only or [c.name for c in study.conditions])
    unknown = wanted - {c.name for c in study.conditions}
    if unknown:
        raise ValueError(f"--only: unknown conditions {', '.join(sorted(unknown))}")
    todo = [r for c in study.conditions if c.name in wanted for r in runs[c.name] if not r.done]
    print(f"study {study.name}: {len(study.conditions)} conditions x {len(study.seeds)} seeds -> {study.report_dir}")
    total = 0.0
    for c in study.conditions:
        for r in runs[c.name]:
            est = 0.0 if r.done else estimate_s(r)
            total += est if c.name in wanted else 0.0
            state = "done" if r.done else ("todo" if c.name in wanted else "skipped (--only)")
            print(f"  {c.name:<22} seed {str(r.seed):<4} {state:<17} ~{est / 60:5.1f} min  {r.folder}")
    print(f"{len(todo)} runs to do, estimated {total / 60:.0f} min on 2 CPU cores")
    if dry_run:
        return None
    t0 = time.perf_counter()
    for i, r in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {r.condition.name} seed {r.seed} -> {r.folder}", flush=True)
        res = execute(r, runs)
        print(f"[{i}/{len(todo)}] {r.condition.name} seed {r.seed}: accuracy {100 * res['accuracy']:.2f}%", flush=True)
    knock = None
    if study.knockout:
        source = runs[study.knockout["condition"]]
        if source and source[0].done:
            cache = study.runs_dir / f"knockout-{_hash([str(source[0].folder), study.knockout])}.json"
            if cache.is_file():
                knock = json.loads(cache.read_text())
            else:
                print(f"knock-out on {source[0].checkpoint()}", flush=True)
                knock = knockout(study.knockout, source[0].checkpoint())
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_text(json.dumps(knock, indent=2))
    path = write_report(
        study, runs, command or f"python -m ml study {study.config_path}", knock, time.perf_counter() - t0
    )
    print(f"report: {path}")
    return path


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ml study", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", help="study YAML (ml/configs/studies/*.yaml)")
    parser.add_argument("--only", default="", help="comma-separated conditions to run (others are reported if done)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the estimated budget; run nothing")
    parser.add_argument("--report-dir", default="", help="write the report here instead of the config's report_dir")
    args = parser.parse_args(argv)
    try:
        study = load_study(args.config)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        parser.error(str(exc))
    if args.report_dir:
        study = copy.copy(study)
        study.report_dir = Path(args.report_dir)
    only = [s.strip() for s in args.only.split(",") if s.strip()] or None
    run_study(study, only=only, dry_run=args.dry_run, command=shlex.join(["python", "-m", "ml", "study", *argv]))
