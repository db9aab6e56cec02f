"""The study file: conditions, hypotheses, knock-out and transfer sections, read from YAML and checked."""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
