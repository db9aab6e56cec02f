"""ml.models: every registered model, parameter counts, MACs and the ablation switches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ml.models import MODELS, build_model, count_flops, count_parameters, main

BIG = {"wrn28_10"}  # construction and parameter count only


@pytest.mark.parametrize("name", sorted(set(MODELS) - BIG))
@pytest.mark.parametrize("num_classes", [10, 100])
def test_every_model_gives_logits(name: str, num_classes: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=num_classes)
    model.train()
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, num_classes)
    assert torch.isfinite(logits).all()
    logits.sum().backward()  # the graph reaches every trainable parameter
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
    # frozen on purpose: the fast net's whitening filters and its batch-norm scales
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        # CIFAR ResNets with 1x1-conv projection shortcuts; WRN counts as published (36.5 M, 2.7 M)
        ("resnet20", 272_474),
        ("resnet56", 855_770),
        ("preact_resnet18", 11_172_170),
        ("wrn16_4", 2_748_890),
        ("wrn28_10", 36_479_194),
    ],
)
def test_known_parameter_counts(name: str, params: int) -> None:
    assert count_parameters(build_model(name)) == params


def test_unknown_model_names_the_choices() -> None:
    with pytest.raises(KeyError, match="resnet20"):
        build_model("resnet21")


def test_resnet_depth_must_fit() -> None:
    from ml.models import CifarResNet, WideResNet

    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(21)
    with pytest.raises(ValueError, match="6n\\+4"):
        WideResNet(17)


def test_width_scales_channels() -> None:
    assert build_model("resnet20", width=0.5).fc.in_features == 32
    assert build_model("resnet20", width=2.0).fc.in_features == 128


def test_count_flops_by_hand() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    assert count_flops(model) == 32 * 32 * 4 * 3 * 9 + 4 * 2
    strided = nn.Sequential(nn.Conv2d(3, 8, 1, stride=2))
    assert count_flops(strided) == 16 * 16 * 8 * 3


def test_resnet20_macs() -> None:
    # about 41 M multiply-accumulates, as usually quoted for ResNet-20 on CIFAR
    assert 40e6 < count_flops(build_model("resnet20")) < 42e6


ABLATABLE = [("resnet20", {}), ("preact_resnet18", {"width": 0.125}), ("wrn16_4", {"width": 0.25})]


@pytest.mark.parametrize(("name", "options"), ABLATABLE)
def test_norm_false_has_no_batch_norm(name: str, options: dict) -> None:
    with_norm = build_model(name, **options)
    without = build_model(name, norm=False, **options)
    assert any(isinstance(m, nn.BatchNorm2d) for m in with_norm.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in without.modules())
    assert without(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def shortcut_modules(model: nn.Module) -> list[str]:
    return [
        name
        for name, m in model.named_modules()
        if name.endswith("shortcut") and not isinstance(m, nn.Identity) and any(True for _ in m.parameters())
    ]


@pytest.mark.parametrize(("name", "options"), ABLATABLE)
def test_residual_false_drops_the_skip_connections(name: str, options: dict) -> None:
    torch.manual_seed(0)
    residual = build_model(name, **options).eval()
    plain = build_model(name, residual=False, **options).eval()
    assert shortcut_modules(residual) and not shortcut_modules(plain)
    # Same weights (the projection shortcuts have nowhere to go), different function.
    missing, unexpected = plain.load_state_dict(residual.state_dict(), strict=False)
    assert not missing and all("shortcut" in k for k in unexpected)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(residual(x), plain(x))


def test_models_command_lists_every_model(capsys) -> None:
    main([])
    out = capsys.readouterr().out
    for name in MODELS:
        assert name in out
    assert "272,474" in out


def test_the_pointwise_shortcut_is_a_strided_1x1_conv() -> None:
    """Same parameters, outputs and gradients as nn.Conv2d(cin, cout, 1, stride=2)."""
    from ml.models import Pointwise

    torch.manual_seed(0)
    ours, ref = Pointwise(4, 8, stride=2, bias=True), nn.Conv2d(4, 8, 1, stride=2, bias=True)
    ref.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = torch.randn(3, 4, 9, 9, requires_grad=True)  # odd size: the last row and column are taken too
    a, b = ours(x), ref(x)
    torch.testing.assert_close(a, b)
    (ga,) = torch.autograd.grad(a.square().sum(), x)
    (gb,) = torch.autograd.grad(b.square().sum(), x)
    torch.testing.assert_close(ga, gb)


def test_a_narrow_resnet_trains_channels_last_on_any_cpu() -> None:
    """A ResNet-20 at width 0.25 (4 channels before the first strided shortcut): oneDNN's strided
    1x1 backward used to kill the process on CPUs without AVX-512. In a subprocess, so a crash
    fails this test instead of the whole run."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import torch, torch.nn.functional as F\n"
        "torch.set_num_threads(1)\n"
        "from ml.models import build_model\n"
        "m = build_model('resnet20', num_classes=2, width=0.25).to(memory_format=torch.channels_last).train()\n"
        "x = torch.randn(10, 3, 32, 32).contiguous(memory_format=torch.channels_last)\n"
        "F.cross_entropy(m(x), torch.zeros(10, dtype=torch.long)).backward()\n"
        "print(bool(torch.isfinite(m.stem[0].weight.grad).all()))\n"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr[-2000:]
