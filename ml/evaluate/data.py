"""The images a model is evaluated on: its training data spec rebuilt into a split, and a line describing it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ml.data import ArrayDataset, load_source, stratified_split

SPLITS = ("val", "train", "all", "test")
# training-config keys (ml.train.TrainConfig) that select the data, and the load_source keyword each maps to
DATA_OPTION_KEYS = {
    "label_mode": "label_mode",
    "classes": "classes",
    "superclass": "superclass",
    "data_md5": "expected_md5",
}


# ============================================================================= data
def load_eval_data(
    spec: dict[str, Any],
    split: str = "val",
    *,
    data: str | None = None,
    val_per_class: int | None = None,
    split_seed: int | None = None,
) -> tuple[ArrayDataset, dict[str, Any]]:
    """The images to evaluate on, and a description of them for the report.

    ``spec`` is the model's training data spec; ``data``, ``val_per_class`` and ``split_seed``
    override it. ``val`` and ``train`` rebuild the seeded stratified split used in training (held out
    of the part of the source the model trained on); ``all`` is that whole part; ``test`` the source's
    test set. Class subsets and label modes of the training config are applied to any source.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    source = data or spec.get("data")
    if not source:
        raise ValueError("the model does not record its training data; pass --data PATH (and --split)")
    keys = [k for k in DATA_OPTION_KEYS if not (k == "data_md5" and data)]  # the md5 belongs to the training source
    options = {DATA_OPTION_KEYS[k]: spec[k] for k in keys if spec.get(k) not in (None, "")}
    per_class = spec.get("val_per_class", 0) if val_per_class is None else val_per_class
    seed = spec.get("split_seed", 0) if split_seed is None else split_seed
    source_split = "test" if split == "test" else (spec.get("source_split") or "train") if not data else "train"
    dataset = load_source(source, split=source_split, **options)
    description: dict[str, Any] = {"source": str(source), "split": split, "source_split": source_split}
    description.update({k: v for k, v in options.items() if k != "expected_md5"})
    if split in ("val", "train"):
        if not per_class:
            raise ValueError(
                f"split={split!r} needs a validation split but the model was trained without one "
                "(val_per_class=0); pass --val-per-class N, or --split all / --split test"
            )
        train_idx, val_idx = stratified_split(dataset.labels, per_class, seed)
        dataset = dataset.subset(val_idx if split == "val" else train_idx)
        description.update({"val_per_class": int(per_class), "split_seed": int(seed)})
    description["n"] = len(dataset)
    return dataset, description


def describe_split(d: dict[str, Any]) -> str:
    """One line, e.g. 'validation split (500 per class, seed 0) of .../train: 5000 images'."""
    what = {
        "val": f"validation split ({d.get('val_per_class')} per class, seed {d.get('split_seed')})",
        "train": f"training part of the split ({d.get('val_per_class')} per class held out, seed {d.get('split_seed')})",
        "all": "all images",
        "test": "test set",
    }[d["split"]]
    return f"{what} of {d['source']}: {d['n']} images"


def check_classes(model_classes: Sequence[str], data_classes: Sequence[str], what: str) -> None:
    if list(model_classes) != list(data_classes):
        raise ValueError(
            f"{what} predicts classes {list(model_classes)[:12]} but the data has {list(data_classes)[:12]}; "
            "evaluate on a source with the same classes in the same order (see --data)"
        )
