"""Running one (condition, seed): training or evaluating, and scoring its validation predictions."""

import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml.study.plan import Run, _as_overrides, _resolve_refs

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
        from ml.speedrun import SpeedrunConfig, load_split, train_one

        cfg = load_config(
            None, _as_overrides({**overrides, **common, "name": "run", "seeds": seed}), cls=SpeedrunConfig
        )
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        data, train_idx, val_idx = load_split(cfg)  # as python -m ml speedrun does
        result = train_one(cfg, seed, data, train_idx, val_idx)
        return str(Path(result["run_dir"]) / "checkpoint.pt"), cfg.tta if tta is None else int(tta)
    cfg = load_config(None, _as_overrides({**overrides, **common, "name": "run", "seed": seed, "tensorboard": False}))
    assert isinstance(cfg, TrainConfig)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    result = train(cfg)
    return str(Path(result["run_dir"]) / "checkpoint.pt"), 0 if tta is None else int(tta)
