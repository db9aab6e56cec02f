"""The plan of a study: one Run per (condition, seed), its folder named by a hash, and the time budget."""

import glob
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.study.config import REF, Condition, Study


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
