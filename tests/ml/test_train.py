"""ml.train and its parts in ml.training: config loading, schedules, parameter groups, EMA, resume,
early stopping, data options, fine-tuning and freezing in real runs (the helpers: test_finetune.py,
test_runs.py). Tiny runs (about a second each) on generated data."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import ml.train
import ml.training.loop
import ml.training.model
from ml.checkpoint import load_model, read_checkpoint
from ml.models import build_model
from ml.train import (
    EMA,
    TrainConfig,
    load_config,
    lr_factor,
    param_groups,
    train,
)
from tests.ml.fakedata import CIFAR10_CLASSES, tiny_train_overrides


def config(data: Path, tmp_path: Path, **overrides) -> TrainConfig:
    return TrainConfig(**tiny_train_overrides(data, tmp_path / "runs", **overrides))


def metrics(run: str | Path) -> list[dict[str, str]]:
    with open(Path(run) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


# ============================================================================= config
def test_overrides_win_over_yaml_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"epochs": 7, "lr": 1, "model": "resnet32", "flip": False}))
    cfg = load_config(str(path), ["epochs=3", "cutout=8", "flip=yes"])
    assert cfg.epochs == 3 and cfg.cutout == 8 and cfg.flip is True
    assert cfg.model == "resnet32"
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)  # YAML int for a float field
    assert cfg.batch_size == TrainConfig().batch_size


def test_yaml_number_for_a_string_field(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("freeze: 3\n")
    assert load_config(str(path), []).freeze == "3"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["epoch=3"], "unknown config key 'epoch'"),
        (["epochs=three"], "bad value for epochs"),
        (["lr=fast"], "bad value for lr"),
        (["flip=maybe"], "expected a boolean"),
        (["epochs"], "must look like key=value"),
    ],
)
def test_bad_overrides_are_refused(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epochz: 3\n", "unknown config keys: epochz"),
        ("epochs: ten\n", "epochs must be int"),
        ("epochs: 2.5\n", "epochs must be int"),
        ("flip: 1\n", "flip must be bool"),
        ("epochs: true\n", "epochs must be int"),
        ("- 1\n- 2\n", "mapping"),
    ],
)
def test_bad_yaml_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config(str(path), [])


def test_example_configs_load() -> None:
    files = sorted(Path(ml.train.__file__).parent.joinpath("configs").glob("*.yaml"))
    assert files
    for path in files:
        load_config(str(path), [])


def test_cli_refuses_unknown_key(capsys) -> None:
    with pytest.raises(SystemExit):
        ml.train.main(["nonsense=1"])
    assert "unknown config key 'nonsense'" in capsys.readouterr().err


# ============================================================================= schedules, groups, EMA
def lrs(schedule: str, total: int = 100, per_epoch: int = 10, **kw) -> list[float]:
    cfg = TrainConfig(schedule=schedule, **kw)
    return [lr_factor(cfg, s, total, per_epoch) for s in range(total)]


def test_onecycle_rises_to_the_peak_at_a_quarter_then_falls_to_zero() -> None:
    f = lrs("onecycle")
    assert f[0] == 0.0 and f[25] == pytest.approx(1.0) and f[99] == pytest.approx(1 / 75)
    assert all(a < b for a, b in zip(f[:25], f[1:26], strict=True))
    assert all(a > b for a, b in zip(f[25:], f[26:], strict=False))


def test_cosine_with_warmup() -> None:
    f = lrs("cosine", warmup_epochs=1.0)
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)  # 10 warm-up steps
    assert f[10] == pytest.approx(1.0) and f[55] == pytest.approx(0.5)
    assert f[99] < 0.001


def test_step_and_constant() -> None:
    f = lrs("step", warmup_epochs=0.0, step_milestones="0.5,0.75")
    assert f[49] == 1.0 and f[50] == pytest.approx(0.1) and f[75] == pytest.approx(0.01)
    assert set(lrs("constant", warmup_epochs=0.0)) == {1.0}
    with pytest.raises(ValueError, match="unknown schedule"):
        lrs("zigzag")


def test_no_weight_decay_on_norms_and_biases() -> None:
    model = build_model("resnet20", width=0.25)
    decay, no_decay = param_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    bn_weight = model.stem[1].weight
    assert any(p is bn_weight for p in no_decay["params"]) and any(p is model.fc.bias for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_backbone_groups_get_the_multiplier() -> None:
    model = build_model("resnet20", width=0.25)
    groups = param_groups(model, 5e-4, head="fc", backbone_lr_mult=0.1)
    head_ids = {id(model.fc.weight), id(model.fc.bias)}
    for g in groups:
        ids = {id(p) for p in g["params"]}
        assert ids <= head_ids if g["lr_mult"] == 1.0 else not ids & head_ids
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_ema_follows_the_formula() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.9)
    before = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model.train()(torch.randn(4, 2))  # batch norm buffers, including the integer counter, move
    ema.update(model)
    assert torch.allclose(ema.shadow["0.weight"], 0.9 * before + 0.1 * model[0].weight)
    assert ema.shadow["1.num_batches_tracked"].item() == 1


# ============================================================================= runs
def test_run_writes_config_metrics_checkpoints_and_tensorboard(
    shared_image_folder: Path, tmp_path: Path, ml_cache
) -> None:
    result = train(config(shared_image_folder, tmp_path, epochs=2, name="t", tensorboard=True))
    run = Path(result["run_dir"])
    assert run.parent == tmp_path / "runs" and run.name.endswith("-t")
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 2
    rows = metrics(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(0.0 <= float(r["val_acc"]) <= 1.0 and float(r["train_loss"]) > 0 for r in rows)
    assert list((run / "tb").glob("events.out.tfevents.*"))
    model, ckpt = load_model(run / "checkpoint.pt")
    assert ckpt["classes"] == ["cat", "dog", "frog", "ship"] and ckpt["epoch"] == 1
    for key in ("arch", "model_options", "mean", "std", "state_dict", "optimizer", "best", "config", "metrics"):
        assert key in ckpt
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
    best = read_checkpoint(run / "best.pt")
    assert best["metrics"]["val_acc"] == pytest.approx(max(float(r["val_acc"]) for r in rows))
    assert result["best_val_acc"] == pytest.approx(best["best"])


def test_training_lowers_the_loss(shared_image_folder: Path, tmp_path: Path, ml_cache) -> None:
    """The classes differ by colour; three epochs at a constant rate must cut the training loss."""
    run = train(config(shared_image_folder, tmp_path, epochs=3, schedule="constant", warmup_epochs=0.0))["run_dir"]
    losses = [float(r["train_loss"]) for r in metrics(run)]
    assert losses[2] < losses[0]


def test_same_seed_same_run(shared_image_folder: Path, tmp_path: Path, ml_cache) -> None:
    a = read_checkpoint(Path(train(config(shared_image_folder, tmp_path, name="a"))["run_dir"]) / "checkpoint.pt")
    b = read_checkpoint(Path(train(config(shared_image_folder, tmp_path, name="b"))["run_dir"]) / "checkpoint.pt")
    c = read_checkpoint(
        Path(train(config(shared_image_folder, tmp_path, name="c", seed=1))["run_dir"]) / "checkpoint.pt"
    )
    assert torch.equal(a["state_dict"]["fc.weight"], b["state_dict"]["fc.weight"])
    assert not torch.equal(a["state_dict"]["fc.weight"], c["state_dict"]["fc.weight"])


class Interrupt(Exception):
    pass


def test_resume_after_an_interruption_finishes_the_run(
    shared_image_folder: Path, tmp_path: Path, ml_cache, monkeypatch
) -> None:
    real_save = ml.train.save_checkpoint

    def save_then_die(path, payload):
        real_save(path, payload)
        if Path(path).name == "checkpoint.pt":
            raise Interrupt  # the process dies right after epoch 1 is saved

    monkeypatch.setattr(ml.train, "save_checkpoint", save_then_die)
    with pytest.raises(Interrupt):
        train(config(shared_image_folder, tmp_path, epochs=2, name="cut"))
    run = next((tmp_path / "runs").iterdir())
    assert len(metrics(run)) == 1
    monkeypatch.setattr(ml.train, "save_checkpoint", real_save)

    result = train(config(shared_image_folder, tmp_path, epochs=2, name="cut", resume=str(run / "checkpoint.pt")))
    assert Path(result["run_dir"]) == run
    assert [r["epoch"] for r in metrics(run)] == ["1", "2"]
    resumed = read_checkpoint(run / "checkpoint.pt")
    assert resumed["epoch"] == 1

    # the same run without the interruption ends with the same weights
    whole = train(config(shared_image_folder, tmp_path, epochs=2, name="whole"))
    uninterrupted = read_checkpoint(Path(whole["run_dir"]) / "checkpoint.pt")
    for key, value in uninterrupted["state_dict"].items():
        assert torch.allclose(value.float(), resumed["state_dict"][key].float(), atol=1e-6), key


def constant_logits(model, images, mean, std, batch_size=1000, dtype=None):
    """Stands in for infer(): the same validation result every epoch."""
    return torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(len(images), 1)


def test_early_stopping(shared_image_folder: Path, tmp_path: Path, ml_cache, monkeypatch) -> None:
    monkeypatch.setattr(ml.training.loop, "infer", constant_logits)  # where validate() looks it up
    run = train(config(shared_image_folder, tmp_path, epochs=6, early_stop_patience=2))["run_dir"]
    # epoch 1 improves on nothing; epochs 2 and 3 do not improve -> stop after 3
    assert len(metrics(run)) == 3
    assert read_checkpoint(Path(run) / "best.pt")["epoch"] == 0


def test_plateau_cuts_the_rate_after_patience(shared_image_folder: Path, tmp_path: Path, ml_cache, monkeypatch) -> None:
    monkeypatch.setattr(ml.training.loop, "infer", constant_logits)  # where validate() looks it up
    run = train(config(shared_image_folder, tmp_path, epochs=6, schedule="plateau", lr=0.05))["run_dir"]
    rates = [float(r["lr"]) for r in metrics(run)]
    # patience 3: four epochs without improvement (2-5) cut the rate by 5x from epoch 6 on
    assert rates[:5] == [pytest.approx(0.05)] * 5 and rates[5] == pytest.approx(0.01)


def test_adamw_cosine_smoothing_cutout_and_ema(shared_image_folder: Path, tmp_path: Path, ml_cache) -> None:
    cfg = config(
        shared_image_folder,
        tmp_path,
        optimizer="adamw",
        lr=1e-3,
        schedule="cosine",
        label_smoothing=0.1,
        cutout=8,
        ema_decay=0.9,
        epochs=2,
    )
    run = Path(train(cfg)["run_dir"])
    ckpt = read_checkpoint(run / "checkpoint.pt")
    assert isinstance(ckpt["optimizer"]["state"][0].get("exp_avg"), torch.Tensor)  # AdamW state
    # the saved weights are the average, the raw ones are kept for resuming
    assert not torch.equal(ckpt["state_dict"]["fc.weight"], ckpt["raw_state_dict"]["fc.weight"])
    resumed = train(dataclasses.replace(cfg, epochs=3, resume=str(run / "checkpoint.pt")))
    assert [r["epoch"] for r in metrics(resumed["run_dir"])] == ["1", "2", "3"]


def test_unknown_optimizer(shared_image_folder: Path, tmp_path: Path, ml_cache) -> None:
    with pytest.raises(ValueError, match="unknown optimizer"):
        train(config(shared_image_folder, tmp_path, optimizer="lion"))


def test_plain_cnn_trains(shared_image_folder: Path, tmp_path: Path, ml_cache) -> None:
    run = train(config(shared_image_folder, tmp_path, model="plain_cnn"))["run_dir"]
    model, ckpt = load_model(Path(run) / "checkpoint.pt")
    assert ckpt["arch"] == "plain_cnn" and ckpt["model_options"] == {}


# ============================================================================= data options
def test_cifar100_fish_subset(cifar100_dir: Path, tmp_path: Path) -> None:
    run = train(config(cifar100_dir, tmp_path, superclass="fish", val_per_class=1))["run_dir"]
    ckpt = read_checkpoint(Path(run) / "checkpoint.pt")
    assert ckpt["classes"] == ["aquarium_fish", "flatfish", "ray", "shark", "trout"]
    assert ckpt["state_dict"]["fc.weight"].shape[0] == 5
    assert set(ckpt["superclasses"].values()) == {"fish"}


def test_cifar100_coarse_labels(cifar100_dir: Path, tmp_path: Path) -> None:
    run = train(config(cifar100_dir, tmp_path, label_mode="coarse", val_per_class=1, train_limit=64))["run_dir"]
    ckpt = read_checkpoint(Path(run) / "checkpoint.pt")
    assert len(ckpt["classes"]) == 20 and ckpt["classes"][0] == "aquatic_mammals"
    assert ckpt["data"]["label_mode"] == "coarse"


def test_class_list_and_test_split(cifar10_archive: Path, tmp_path: Path) -> None:
    from tests.ml.fakedata import md5_of

    run = train(
        config(
            cifar10_archive,
            tmp_path,
            data_md5=md5_of(cifar10_archive),
            classes="cat,dog",
            split="test",
            val_per_class=1,
        )
    )["run_dir"]
    ckpt = read_checkpoint(Path(run) / "checkpoint.pt")
    assert ckpt["classes"] == ["cat", "dog"] and ckpt["data"]["split"] == "test"
    assert "test" in ckpt["data"]["source"]


# ============================================================================= fine-tuning
def test_fine_tune_new_classes_with_frozen_stages(tiny_run: Path, cifar10_dir: Path, tmp_path: Path) -> None:
    init = read_checkpoint(tiny_run / "checkpoint.pt")
    cfg = config(
        cifar10_dir,
        tmp_path,
        model="resnet56",  # ignored: the checkpoint's architecture is used
        width=1.0,
        init_from=str(tiny_run / "checkpoint.pt"),
        freeze="stem,layers.0-2",
        val_per_class=1,
        epochs=2,
    )
    run = Path(train(cfg)["run_dir"])
    ckpt = read_checkpoint(run / "checkpoint.pt")
    assert ckpt["arch"] == "resnet20" and ckpt["model_options"]["width"] == 0.25
    assert ckpt["classes"] == CIFAR10_CLASSES and ckpt["state_dict"]["fc.weight"].shape == (10, 16)
    assert ckpt["mean"] == init["mean"]  # the backbone's normalisation
    for key, before in init["state_dict"].items():
        after = ckpt["state_dict"][key]
        if key.startswith(("stem.", "layers.0.", "layers.1.", "layers.2.")):
            assert torch.equal(before, after), f"{key} changed although frozen"  # batch-norm statistics too
        elif key.startswith("layers.5.") and key.endswith("conv1.weight"):
            assert not torch.equal(before, after), f"{key} did not train"


def test_backbone_lr_mult_zero_trains_only_the_head(
    tiny_run: Path, tmp_path: Path, shared_image_folder: Path, ml_cache
) -> None:
    init = read_checkpoint(tiny_run / "checkpoint.pt")
    cfg = config(
        shared_image_folder,
        tmp_path,
        init_from=str(tiny_run / "checkpoint.pt"),
        backbone_lr_mult=0.0,
        weight_decay=0.0,
        new_head=True,
    )
    ckpt = read_checkpoint(Path(train(cfg)["run_dir"]) / "checkpoint.pt")
    for key, before in init["state_dict"].items():
        after = ckpt["state_dict"][key]
        if "running_" in key or "num_batches" in key:
            continue  # batch-norm statistics still follow the data
        if key.startswith("fc."):
            assert not torch.equal(before, after)
        else:
            assert torch.equal(before, after), key


def test_new_head_reinitialises_even_for_the_same_classes(
    tiny_run: Path, tmp_path: Path, shared_image_folder: Path, ml_cache, monkeypatch
) -> None:
    loaded = {}
    real = ml.training.model.load_backbone

    def spy(model, ckpt, keep_head):
        loaded["keep_head"] = keep_head
        return real(model, ckpt, keep_head)

    monkeypatch.setattr(ml.training.model, "load_backbone", spy)  # where build_train_model() looks it up
    train(config(shared_image_folder, tmp_path, init_from=str(tiny_run / "checkpoint.pt"), epochs=1, lr=0.0))
    assert loaded["keep_head"] is True
    train(config(shared_image_folder, tmp_path, init_from=str(tiny_run / "checkpoint.pt"), new_head=True, lr=0.0))
    assert loaded["keep_head"] is False


def test_infer_returns_cpu_float_logits() -> None:
    model = build_model("resnet20", width=0.25)
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (5, 3, 32, 32), dtype=np.uint8))
    logits = ml.train.infer(model, images, torch.tensor([0.5] * 3), torch.tensor([0.25] * 3), batch_size=2)
    assert logits.shape == (5, 10) and logits.dtype == torch.float32 and model.training
    assert not math.isnan(logits.sum().item())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_run_bf16_channels_last(shared_image_folder: Path, tmp_path: Path, ml_cache) -> None:
    run = Path(train(config(shared_image_folder, tmp_path, device="cuda", epochs=2))["run_dir"])
    ckpt = read_checkpoint(run / "checkpoint.pt")
    assert all(v.device.type == "cpu" for v in ckpt["state_dict"].values())
    assert ckpt["state_dict"]["fc.weight"].dtype == torch.float32  # autocast leaves the weights in fp32
    rows = metrics(run)
    assert len(rows) == 2 and all(math.isfinite(float(r["val_loss"])) for r in rows)
