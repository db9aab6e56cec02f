"""The fast net, its whitening layer, test-time augmentation, precision selection and ml speedrun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ml import precision as prec
from ml import torchscript
from ml.checkpoint import load_model
from ml.models import FastNet, WhiteningConv, build_model, count_parameters
from ml.speedrun import SpeedrunConfig, alternating_flip, main, triangle
from ml.speedrun.recipe import mix
from ml.tta import TestTimeAugment


def test_whitening_filters_decorrelate_patches() -> None:
    torch.manual_seed(0)
    # correlated channels: the whitened 2x2 patches must have (nearly) identity covariance
    base = torch.randn(400, 1, 16, 16)
    images = torch.cat([base, 0.8 * base + 0.2 * torch.randn_like(base), torch.randn(400, 1, 16, 16)], 1)
    layer = WhiteningConv(3, eps=1e-6)
    layer.init_from_data(images)
    assert not layer.weight.requires_grad and layer.bias.requires_grad
    with torch.no_grad():
        out = torch.nn.functional.conv2d(images, layer.weight[:12])  # the positive half, no bias
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    cov = torch.cov(flat.T)
    assert torch.allclose(cov, torch.eye(12), atol=0.05)
    assert torch.equal(layer.weight[12:], -layer.weight[:12])


def test_fastnet_shapes_options_and_frozen_parts() -> None:
    net = build_model("fastnet", num_classes=7)
    assert isinstance(net, FastNet)
    assert net(torch.randn(3, 3, 32, 32)).shape == (3, 7)
    half = build_model("fastnet", width=0.5)
    assert count_parameters(half) < count_parameters(net) / 2
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert "whiten.weight" not in trainable and "blocks.0.norm1.weight" not in trainable
    assert "blocks.0.norm1.bias" in trainable
    learned = build_model("fastnet", whiten=False)
    assert learned.whiten.weight.requires_grad
    no_norm = build_model("fastnet", norm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in no_norm.modules())
    assert no_norm.blocks[0].conv1.bias is not None
    assert net.get_submodule(FastNet.cam_layer) is net.blocks[1]


def test_fastnet_explicit_group_widths() -> None:
    net = build_model("fastnet", widths=[16, 48, 32], num_classes=5)
    assert [g.conv2.out_channels for g in net.blocks] == [16, 48, 32]
    assert net.head.in_features == 32 and net(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    with pytest.raises(ValueError, match="three positive channel counts"):
        build_model("fastnet", widths=[16, 48])


def test_speedrun_widths_reach_the_checkpoint(shared_image_folder: Path, tmp_path: Path, ml_cache) -> None:
    out = tmp_path / "runs"
    tiny = ["val_per_class=5", "epochs=1", "batch_size=16", "precision=fp32", "targets=0.0"]
    main([f"data={shared_image_folder}", *tiny, "seeds=0", f"out_dir={out}", "name=w", "widths=8,24,16"])
    model, ckpt = load_model(next(out.glob("*-w-s0")) / "best.pt")
    assert ckpt["model_options"]["widths"] == [8, 24, 16]
    assert [g.conv2.out_channels for g in model.blocks] == [8, 24, 16]


def test_tta_levels() -> None:
    torch.manual_seed(0)
    model = build_model("fastnet").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
        assert torch.allclose(TestTimeAugment(model, 0)(x), plain)
        mirror = 0.5 * (plain + model(x.flip(3)))
        assert torch.allclose(TestTimeAugment(model, 1)(x), mirror, atol=1e-6)
        padded = torch.nn.functional.pad(x, [1, 1, 1, 1], mode="reflect")
        shifted = [padded[:, :, :32, :32], padded[:, :, 2:, 2:]]
        expected = 0.5 * mirror + 0.25 * sum(0.5 * (model(s) + model(s.flip(3))) for s in shifted)
        level2 = TestTimeAugment(model, 2)
        assert torch.allclose(level2(x), expected, atol=1e-5)
        assert torch.allclose(torchscript.script(level2)(x), expected, atol=1e-5)
    with pytest.raises(ValueError, match="TTA level"):
        TestTimeAugment(model, 3)


def test_precision_resolution() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert prec.resolve("fp32", cpu) is None
    assert prec.resolve("bf16", cpu) is torch.bfloat16
    assert prec.resolve("auto", cuda) is torch.bfloat16
    assert prec.resolve("auto", cpu) is (torch.bfloat16 if prec.cpu_bf16_pays() else None)
    assert prec.name(None) == "fp32" and prec.name(torch.bfloat16) == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        prec.resolve("fp16", cpu)


def test_triangle_schedule_and_alternating_flip() -> None:
    assert triangle(0, 100) == pytest.approx(0.2)
    assert triangle(23, 100) == pytest.approx(1.0)
    assert triangle(100, 100) == pytest.approx(0.07)
    x = torch.arange(2 * 1 * 1 * 4, dtype=torch.float32).view(2, 1, 1, 4)
    base = torch.tensor([True, False])
    even, odd = alternating_flip(x, base, 0), alternating_flip(x, base, 1)
    assert torch.equal(even[0], x[0].flip(2)) and torch.equal(even[1], x[1])
    assert torch.equal(odd[0], x[0]) and torch.equal(odd[1], x[1].flip(2))


def test_mixup_blends_each_image_with_another_of_the_batch_and_its_label_alike() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 4, 4)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    mixed, target = mix(x, y, 4, 0.7, gen)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))  # the permutation mix drew
    assert torch.allclose(mixed, 0.7 * x + 0.3 * x[perm])
    onehot = F.one_hot(y, 4).float()
    assert torch.allclose(target, 0.7 * onehot + 0.3 * onehot[perm])
    assert torch.allclose(target.sum(1), torch.ones(6))
    same, hard = mix(x, y, 4, 1.0, gen)  # lam 1: nothing blended
    assert torch.equal(same, x) and torch.equal(hard.argmax(1), y)
    # cross-entropy with the blended labels is the blend of the two cross-entropies
    logits = torch.randn(6, 4)
    want = 0.7 * F.cross_entropy(logits, y, reduction="none") + 0.3 * F.cross_entropy(logits, y[perm], reduction="none")
    assert torch.allclose(F.cross_entropy(logits, target, reduction="none"), want, atol=1e-6)


def test_speedrun_with_mixup_trains_and_records_it(shared_image_folder: Path, tmp_path: Path, ml_cache) -> None:
    out = tmp_path / "runs"
    tiny = ["val_per_class=5", "epochs=1", "batch_size=16", "width=0.125", "precision=fp32", "targets=0.0"]
    main([f"data={shared_image_folder}", *tiny, "seeds=0", f"out_dir={out}", "name=mix", "mixup=1.0"])
    run = next(out.glob("*-mix-s0"))
    _, ckpt = load_model(run / "best.pt")
    assert ckpt["config"]["mixup"] == 1.0
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 2 and 0.0 <= float(rows[1].split(",")[3]) <= 1.0  # the train accuracy is a fraction


def test_speedrun_writes_runs_a_summary_and_times_targets(shared_image_folder: Path, tmp_path: Path, ml_cache, capsys):
    out = tmp_path / "runs"
    main(
        [
            f"data={shared_image_folder}",
            "val_per_class=5",
            "epochs=2",
            "batch_size=16",
            "width=0.125",
            "seeds=0,1",
            "targets=0.0,1.01",
            "precision=fp32",
            f"out_dir={out}",
            "name=tiny",
        ]
    )
    printed = capsys.readouterr().out
    summary = json.loads((out / "speedrun-tiny.json").read_text())
    assert [r["seed"] for r in summary["runs"]] == [0, 1]
    assert summary["time_to"]["0.0000"]["reached"] == "2 of 2"  # any accuracy reaches 0
    assert summary["time_to"]["1.0100"]["reached"] == "0 of 2"  # none exceeds 100%
    assert summary["precision"] == "fp32" and "±" in summary["final_val_acc"]
    assert "time to 0%" in printed
    epoch_lines = [line for line in printed.splitlines() if "] epoch " in line]
    assert len(epoch_lines) == 4 and all("to go" in line for line in epoch_lines[::2])  # epoch 1 of 2, each seed
    assert not any("to go" in line for line in epoch_lines[1::2])  # nothing left after the last
    for run in summary["runs"]:
        assert 0 < run["time_to"]["0.0000"] <= run["train_s"]
        model, ckpt = load_model(Path(run["run_dir"]) / "best.pt")
        assert ckpt["arch"] == "fastnet" and ckpt["model_options"]["width"] == 0.125
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 4)
        rows = (Path(run["run_dir"]) / "metrics.csv").read_text().strip().splitlines()
        assert len(rows) == 3  # header + 2 epochs


def test_speedrun_config_refuses_unknown_keys(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["epochz=2"])
    assert "unknown config key 'epochz'" in capsys.readouterr().err
    assert SpeedrunConfig().batch_size == 1024


def test_the_whitening_sample_spans_a_class_ordered_set() -> None:
    """Training arrays are ordered by class; the whitening statistics must not come from the first
    class or two only (the first 5,000 of the CIFAR-10 copy were 4,500 airplanes)."""
    from ml.models.fast import whitening_sample

    labels = torch.arange(10).repeat_interleave(100)  # ordered by class, as an image folder loads
    images = labels.view(-1, 1, 1, 1).expand(-1, 3, 4, 4).to(torch.uint8)
    sample = whitening_sample(images, n=200, seed=0)
    classes = sample[:, 0, 0, 0]
    assert len(sample) == 200 and set(classes.tolist()) == set(range(10))
    assert torch.equal(sample, whitening_sample(images, n=200, seed=0))  # seeded
    assert not torch.equal(sample, whitening_sample(images, n=200, seed=1))
    assert torch.equal(whitening_sample(images[:50], n=200), images[:50])  # fewer than n: all of them
