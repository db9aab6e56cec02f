"""Int8 post-training quantisation of a bundle's members, for CPUs with fast int8 dot products.

    quantized = quantize_member(model, calibration)   # an FX GraphModule: int8 convs and linear

Static quantisation with PyTorch's FX graph mode and the ``x86`` engine (FBGEMM/oneDNN kernels:
VNNI on AVX-512 CPUs, AVX2 elsewhere): weights int8 per output channel, activations uint8 per
tensor, their ranges observed on ``calibration`` (normalised training images, never the
validation split the report measures). The input is quantised inside the module and the logits
come back in float32, so a member's test-time augmentation and temperature stay in float
(`ml.bundle_module.QuantizedMember`).

Only the forward pass is quantised: Grad-CAM needs gradients, which int8 kernels do not have, so
a bundle keeps its float module for explanations (`worker.runtime.bundle`).

Measured on one shipped member (a 12-epoch fast net; 5,000 validation images, no TTA; 2-core AMD
EPYC with AVX512-BF16 and VNNI): 90.22% in fp32, 90.06% in int8 (whitening conv in float, GELUs on
int8); batches of 64 at 2,250 images/s against 1,380 in bf16 (1.63x). The whole bundle's numbers
are in its report (``precision.json``) and in ``benchmarks/results``.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

ENGINE = "x86"
CALIBRATION_IMAGES = 2048


def plain_layers(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose subclassed convolutions and batch norms that keep torch's forward
    (``FastNet``'s frozen whitening conv and fixed-scale norm: only their construction differs)
    are the plain torch layers with the same weights, which FX traces as leaves and knows how to
    quantise. A subclass with its own forward is kept (FX traces through it)."""
    model = copy.deepcopy(model).float().eval().cpu()

    def subclass_of(child: nn.Module, base: type[nn.Module]) -> bool:
        return isinstance(child, base) and type(child) is not base and type(child).forward is base.forward

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if subclass_of(child, nn.BatchNorm2d):
                plain = nn.BatchNorm2d(child.num_features, eps=child.eps, momentum=child.momentum)
            elif subclass_of(child, nn.Conv2d):
                plain = nn.Conv2d(
                    child.in_channels,
                    child.out_channels,
                    child.kernel_size,
                    stride=child.stride,
                    padding=child.padding,
                    dilation=child.dilation,
                    groups=child.groups,
                    bias=child.bias is not None,
                )
            else:
                swap(child)
                continue
            plain.load_state_dict(child.state_dict())
            setattr(parent, name, plain.eval())

    swap(model)
    return model


@torch.no_grad()
def quantize_member(model: nn.Module, calibration: torch.Tensor, batch_size: int = 256) -> torch.fx.GraphModule:
    """``model`` (float, normalised N x 3 x H x W in, logits out) statically quantised to int8 with
    the activation ranges of ``calibration`` (normalised float images). The layers the model's
    class names in ``int8_float_layers`` stay in float (FastNet's 2x2 whitening conv, which sees
    the raw pixels: 0.14 points better than int8 there on one member, at almost no cost, since it
    is 0.2% of the net's MACs). Raises RuntimeError when this torch build has no ``x86``
    quantisation engine."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if ENGINE not in torch.backends.quantized.supported_engines:
        raise RuntimeError(
            f"this torch build has no {ENGINE!r} quantisation engine "
            f"(it has {', '.join(torch.backends.quantized.supported_engines)}): int8 export needs an x86 CPU build"
        )
    torch.backends.quantized.engine = ENGINE
    with warnings.catch_warnings():  # FX quantisation is "deprecated in favour of torchao"; it is what torch ships
        warnings.simplefilter("ignore")
        mapping = get_default_qconfig_mapping(ENGINE)
        for name in getattr(model, "int8_float_layers", ()):
            mapping.set_module_name(name, None)
        prepared = prepare_fx(plain_layers(model), mapping, example_inputs=(calibration[:2].float(),))
        for i in range(0, len(calibration), batch_size):
            prepared(calibration[i : i + batch_size].float())
        quantized = convert_fx(prepared).eval()
    gelu_on_int8(quantized)
    # FX copies the traced forward's annotations into its generated code, and string annotations
    # (``from __future__ import annotations``) come out as names TorchScript cannot resolve.
    for node in quantized.graph.nodes:
        node.type = None
    quantized.recompile()
    return quantized


def gelu_on_int8(module: torch.fx.GraphModule) -> int:
    """Run each GELU on its int8 input instead of in float: ``quantize(gelu(dequantize(x)))``
    becomes ``gelu(x)``. The x86 backend config has no GELU, so FX leaves every one between a
    dequantize and a quantize: 40% of an int8 fast net's time went to those round trips (torch
    profiler, batches of 64). torch's int8 GELU keeps its input's scale; the next layer (conv,
    max-pool, linear) reads the scale from its input, so dropping the requantisation is exact
    with respect to what follows. Returns how many GELUs were rewritten."""
    rewritten = 0
    for node in list(module.graph.nodes):
        if node.op != "call_function" or node.target not in (torch._C._nn.gelu, torch.nn.functional.gelu):
            continue
        source = node.args[0]
        users = list(node.users)
        if not (
            isinstance(source, torch.fx.Node)
            and source.op == "call_method"
            and source.target == "dequantize"
            and len(users) == 1
            and users[0].op == "call_function"
            and users[0].target is torch.quantize_per_tensor
        ):
            continue
        requantize = users[0]
        node.replace_input_with(source, source.args[0])
        requantize.replace_all_uses_with(node)
        module.graph.erase_node(requantize)
        if not source.users:
            module.graph.erase_node(source)
        rewritten += 1
    module.graph.eliminate_dead_code()
    module.recompile()
    return rewritten


def calibration_images(
    dataset: Any, mean: list[float], std: list[float], n: int = CALIBRATION_IMAGES, seed: int = 0
) -> torch.Tensor:
    """``n`` images drawn at random (seeded) from ``dataset`` (uint8 N x 3 x H x W ``images``),
    normalised with ``mean`` and ``std`` (0-1 scale) as the member sees them."""
    from ml.augment import normalize

    images = dataset.images
    idx = np.sort(np.random.default_rng(seed).permutation(len(images))[: min(n, len(images))])
    return normalize(torch.as_tensor(np.asarray(images[idx])), torch.tensor(mean), torch.tensor(std))
