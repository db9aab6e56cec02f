"""ml.finetune: freezable units and freeze specs, loading a backbone with or without its head,
training mode with frozen batch norms. (Fine-tuning runs end to end: test_train.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ml.checkpoint import read_checkpoint
from ml.finetune import backbone_units, head_name, load_backbone, parse_freeze, train_mode
from ml.models import build_model


def test_units_and_freeze_specs() -> None:
    model = build_model("resnet20", width=0.25)
    assert backbone_units(model) == ["stem"] + [f"layers.{i}" for i in range(9)]
    assert head_name(model) == "fc"
    assert parse_freeze("", model) == []
    assert parse_freeze("3", model) == ["stem", "layers.0", "layers.1"]
    assert parse_freeze("layers.2-3, stem", model) == ["stem", "layers.2", "layers.3"]
    assert parse_freeze("backbone", model) == backbone_units(model)
    with pytest.raises(ValueError, match="unknown unit 'layers.9'.*stem, layers.0"):
        parse_freeze("layers.7-9", model)
    with pytest.raises(ValueError, match="only 10 units"):
        parse_freeze("11", model)
    preact = build_model("preact_resnet18", width=0.125)
    assert backbone_units(preact)[0] == "stem" and backbone_units(preact)[-1] == "bn"
    plain = build_model("plain_cnn")
    assert backbone_units(plain) == ["features.0", "features.1", "features.2"] and head_name(plain) == "head.4"


def test_load_backbone_keeps_or_replaces_the_head(tiny_run: Path) -> None:
    ckpt = read_checkpoint(tiny_run / "checkpoint.pt")
    same = build_model("resnet20", num_classes=4, width=0.25)
    assert load_backbone(same, ckpt, keep_head=True) == []
    assert torch.equal(same.fc.weight, ckpt["state_dict"]["fc.weight"])
    other = build_model("resnet20", num_classes=10, width=0.25)
    assert load_backbone(other, ckpt, keep_head=False) == ["fc.weight", "fc.bias"]
    assert torch.equal(other.stem[0].weight, ckpt["state_dict"]["stem.0.weight"])
    with pytest.raises(ValueError, match="shapes differ"):
        load_backbone(build_model("resnet20", num_classes=4, width=0.5), ckpt, keep_head=True)


def test_frozen_batchnorm_stays_in_eval_mode() -> None:
    model = build_model("resnet20", width=0.25)
    frozen = [model.get_submodule(n) for n in parse_freeze("2", model)]
    train_mode(model, frozen)
    assert not model.stem[1].training and not model.layers[0].bn1.training
    assert model.layers[1].bn1.training and model.training
