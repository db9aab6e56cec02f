"""The TorchScript module of a model bundle: members with normalisation, test-time augmentation and
temperature, and their ensemble (``forward``, ``scores``, ``explain``, ``set_tta``).

`ml.export` scripts `build_ensemble(...)` into ``model.pt``; see its docstring for the contract and
`worker.runtime.bundle` for how the worker loads it (precision, TTA level).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ml.tta import TestTimeAugment


class Member(nn.Module):
    """One model with its normalisation and test-time augmentation: uint8 images -> probabilities.

    The logits are TTA-averaged (``ml.tta.TestTimeAugment``, level 0/1/2), divided by the
    (bundle-wide) temperature and softmaxed."""

    def __init__(
        self,
        model: nn.Module,
        mean: list[float],
        std: list[float],
        tta: int = 0,
        temperature: float = 1.0,
        temperatures: list[float] | None = None,
    ):
        super().__init__()
        self.tta = TestTimeAugment(model, tta)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        # one temperature per TTA level 0..tta (each level's logits have their own scale); the
        # one in use is that of the current level (`set_tta`)
        levels = [float(temperature)] * (tta + 1) if temperatures is None else [float(t) for t in temperatures]
        if len(levels) != tta + 1:
            raise ValueError(f"need {tta + 1} temperatures (TTA levels 0..{tta}), got {len(levels)}")
        self.register_buffer("temperatures", torch.tensor(levels, dtype=torch.float32))
        self.register_buffer("temperature", torch.tensor(levels[tta], dtype=torch.float32))

    @torch.jit.export
    def set_tta(self, level: int) -> None:
        """Switch to TTA level ``level`` (0 .. the exported level) and its temperature."""
        if level < 0 or level >= self.temperatures.shape[0]:
            raise ValueError("TTA level out of range for this bundle")
        self.tta.level = level
        self.temperature = self.temperatures[level].clone()

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> normalised, in the weights' dtype (float32, or bfloat16 once the runtime has
        converted the module: `worker.runtime.precision`), channels_last for oneDNN."""
        x = (images.float() - self.mean.float()) / self.std.float()
        return x.to(self.mean.dtype).contiguous(memory_format=torch.channels_last)

    @torch.jit.export
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """TTA-averaged logits, before the temperature."""
        return self.tta(self.normalise(images)).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(images) / self.temperature.float(), dim=1)

    @torch.jit.export
    def cam_forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(activation of the model's cam_layer, logits of the image itself, TTA-averaged logits);
        needs gradients enabled: the first two carry the graph that Grad-CAM differentiates."""
        x = self.normalise(images).detach().requires_grad_()
        act, first = self.tta.model.cam_forward(x)
        with torch.no_grad():
            averaged = self.tta.with_first(x.detach(), first.detach())
        return act, first.float(), averaged.float()


class Ensemble(nn.Module):
    """Average of the members' probabilities. ``forward`` is the bundle contract (uint8 in,
    probabilities out); ``scores`` and ``explain`` are the exported extras the worker may call."""

    def __init__(self, members: list[Member], map_size: list[int] | None = None):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.map_size = list(map_size or [0, 0])  # [0, 0]: each member's own map size (all equal)

    @torch.jit.export
    def set_tta(self, level: int) -> None:
        """Run every member at TTA level ``level`` (0 .. the exported level), with that level's
        temperature: fewer views, more images/s, a little less accuracy (the bundle's report)."""
        for member in self.members:
            member.set_tta(level)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise ValueError("expected uint8 images N x 3 x H x W")
        total = torch.zeros(0)
        n = 0
        for member in self.members:
            p = member(images)
            total = p if n == 0 else total + p
            n += 1
        return total / n

    @torch.jit.export
    def scores(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """probs N x C, member_probs M x N x C, member_logits M x N x C (TTA-averaged, before the
        temperature) and ood_score N (the members' mean energy -logsumexp(logits); higher = less
        like the training images)."""
        if images.dtype != torch.uint8:
            raise ValueError("expected uint8 images N x 3 x H x W")
        logits: list[torch.Tensor] = []
        probs: list[torch.Tensor] = []
        for member in self.members:
            z = member.logits(images)
            logits.append(z)
            probs.append(torch.softmax(z / member.temperature.float(), dim=1))
        stacked_logits = torch.stack(logits)
        member_probs = torch.stack(probs)
        return {
            "probs": member_probs.mean(0).detach(),
            "member_probs": member_probs.detach(),
            "member_logits": stacked_logits.detach(),
            "ood_score": -torch.logsumexp(stacked_logits, dim=2).mean(0).detach(),
        }

    @torch.jit.export
    def explain(
        self, images: torch.Tensor, class_index: torch.Tensor | None = None, top_k: int = 5
    ) -> dict[str, torch.Tensor]:
        """``scores`` plus Grad-CAM: cam N x K x h x w for the classes ``class_index`` (N x K
        long), or for the ensemble's ``top_k`` most probable classes when it is None.

        Each member's map is Grad-CAM proper (Selvaraju et al. 2017) on its ``cam_layer``: the
        gradient of the member's logit of the class for the image itself (no TTA, no
        temperature) with respect to that layer's activation A, averaged over space per channel
        (weights w), then relu(sum_c w_c A_c). The ensemble's map is the mean of the members'
        maps (resized to ``map_size`` when that is set). Call with gradients enabled
        (``torch.enable_grad()``, not under inference mode) and ``torch.jit.optimized_execution(False)``:
        the optimising executor's differentiable subgraphs hide the activation from autograd.grad
        from the second call on."""
        if images.dtype != torch.uint8:
            raise ValueError("expected uint8 images N x 3 x H x W")
        if not torch.is_grad_enabled():
            raise RuntimeError("explain() needs gradients: call it under torch.enable_grad()")
        acts: list[torch.Tensor] = []
        firsts: list[torch.Tensor] = []
        logits: list[torch.Tensor] = []
        probs: list[torch.Tensor] = []
        for member in self.members:
            act, first, averaged = member.cam_forward(images)
            acts.append(act)
            firsts.append(first)
            logits.append(averaged)
            probs.append(torch.softmax(averaged / member.temperature.float(), dim=1))
        stacked_logits = torch.stack(logits)
        member_probs = torch.stack(probs)
        ensemble_probs = member_probs.mean(0)
        if class_index is None:
            k = min(top_k, ensemble_probs.shape[1])
            class_index = torch.topk(ensemble_probs, k, dim=1).indices
        cls = class_index.to(torch.long)
        total = torch.zeros(0)
        for m in range(len(acts)):
            maps: list[torch.Tensor] = []
            for j in range(cls.shape[1]):
                score = firsts[m].gather(1, cls[:, j : j + 1]).sum()  # images are independent: one backward
                grads = torch.autograd.grad([score], [acts[m]], retain_graph=True)
                grad = grads[0]
                assert grad is not None
                weights = grad.mean(dim=(2, 3), keepdim=True)
                maps.append(torch.relu((weights * acts[m]).sum(dim=1)).detach())
            cam = torch.stack(maps, dim=1)  # N x K x h x w
            if self.map_size[0] > 0 and (cam.shape[2] != self.map_size[0] or cam.shape[3] != self.map_size[1]):
                cam = F.interpolate(cam, size=self.map_size, mode="bilinear", align_corners=False)
            total = cam if m == 0 else total + cam
        return {
            "probs": ensemble_probs.detach(),
            "member_probs": member_probs.detach(),
            "member_logits": stacked_logits.detach(),
            "ood_score": -torch.logsumexp(stacked_logits, dim=2).mean(0).detach(),
            "class_index": cls,
            "cam": total.float() / len(acts),
        }


class QuantizedMember(Member):
    """A `Member` whose model is int8 (`ml.quantize`): normalisation, TTA and temperature as in
    float, no ``cam_forward`` (int8 kernels have no gradients; explanations use the float module)."""

    def cam_forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError("an int8 member has no gradients: explain with the bundle's float module")


class QuantizedEnsemble(Ensemble):
    """The ensemble of `QuantizedMember`s (``model-int8.pt``): ``forward``, ``scores`` and
    ``set_tta`` as the float module, no ``explain``."""

    def explain(
        self, images: torch.Tensor, class_index: torch.Tensor | None = None, top_k: int = 5
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError("an int8 module has no gradients: explain with the bundle's float module")


def cam_layer_of(model: nn.Module) -> str | None:
    """The model's Grad-CAM layer name, or None when the model class has none."""
    name = getattr(model, "cam_layer", None)
    return name if isinstance(name, str) and hasattr(model, "cam_forward") else None


def _map_size(members: list[Member], input_size: tuple[int, int]) -> list[int]:
    """[0, 0] when all members' cam layers give maps of one size, else the input size (maps get resized)."""
    sizes = set()
    with torch.enable_grad():
        for member in members:
            act, _, _ = member.cam_forward(torch.zeros(1, 3, *input_size, dtype=torch.uint8))
            sizes.add(tuple(act.shape[2:]))
    return [0, 0] if len(sizes) == 1 else list(input_size)


def build_ensemble(
    members: list[tuple[nn.Module, dict[str, Any]]],
    *,
    tta: int = 0,
    temperature: float = 1.0,
    temperatures: list[float] | None = None,
    input_size: tuple[int, int] = (32, 32),
) -> Ensemble:
    """The eager ensemble module that `export_bundle` scripts (float32, CPU, eval mode)."""
    wrapped = [
        Member(model.float().eval().cpu(), info["mean"], info["std"], tta, temperature, temperatures)
        for model, info in members
    ]
    map_size = _map_size(wrapped, input_size) if all(cam_layer_of(m) for m, _ in members) else None
    return Ensemble(wrapped, map_size=map_size).eval()


def build_quantized_ensemble(
    members: list[tuple[nn.Module, dict[str, Any]]],
    calibration: list[torch.Tensor],
    *,
    tta: int = 0,
    temperature: float = 1.0,
    temperatures: list[float] | None = None,
) -> QuantizedEnsemble:
    """The int8 twin of `build_ensemble`: each member quantised (`ml.quantize.quantize_member`)
    with the activation ranges of its ``calibration`` images (normalised with its own mean/std)."""
    from ml.quantize import quantize_member

    wrapped = [
        QuantizedMember(quantize_member(model, images), info["mean"], info["std"], tta, temperature, temperatures)
        for (model, info), images in zip(members, calibration, strict=True)
    ]
    return QuantizedEnsemble(wrapped).eval()
