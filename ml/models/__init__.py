"""CIFAR models, registered by name: a plain CNN baseline and the CIFAR-style ResNet family.

All models take normalised float images N x 3 x 32 x 32 and return logits N x num_classes.
Build one with ``build_model(name, num_classes=..., **options)``; ``MODELS`` lists the names.

Grad-CAM (the bundle's ``explain``, ml/bundle_module.py): every model names in ``cam_layer`` the submodule whose
output the heatmaps explain, and has a TorchScript-exportable ``cam_forward(x)`` returning
``(that submodule's output, logits)`` -- TorchScript has no hooks, so the activation is returned
explicitly; tests check it against Captum's ``LayerGradCam`` on that named layer.

Ablation switches (for hypothesis tests on model components) are constructor options of the
ResNets: ``norm=False`` (no batch norm), ``residual=False`` (no skip connections) and
``width`` (channel multiplier).
"""

from __future__ import annotations

# The registry first; each model module registers its models when imported, in the order the
# registry had when this package was one module (plain CNN, ResNets, fast net).
# isort: off
from ml.models.registry import MODELS, build_model, count_flops, count_parameters, main, register
from ml.models.plain import PlainCNN, plain_cnn
from ml.models.resnet import (
    BasicBlock,
    CifarResNet,
    Pointwise,
    PreActBlock,
    PreActResNet,
    WideBlock,
    WideResNet,
    preact_resnet18,
    wrn16_4,
    wrn16_8,
    wrn28_10,
)
from ml.models.fast import ConvGroup, FastBatchNorm, FastNet, WhiteningConv, fastnet
# isort: on

__all__ = [
    # registry and counting (ml.models.registry)
    "MODELS",
    "build_model",
    "count_flops",
    "count_parameters",
    "main",
    "register",
    # plain CNN (ml.models.plain)
    "PlainCNN",
    "plain_cnn",
    # ResNets (ml.models.resnet)
    "BasicBlock",
    "CifarResNet",
    "Pointwise",
    "PreActBlock",
    "PreActResNet",
    "WideBlock",
    "WideResNet",
    "preact_resnet18",
    "wrn16_4",
    "wrn16_8",
    "wrn28_10",
    # fast net (ml.models.fast)
    "ConvGroup",
    "FastBatchNorm",
    "FastNet",
    "WhiteningConv",
    "fastnet",
]
