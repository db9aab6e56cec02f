"""Channel knock-out: zero the most active channels of a block and measure the accuracy lost."""

from typing import Any

import numpy as np
import torch

from ml.study.runs import checkpoint_probs
from ml.study.stats import holm, mcnemar_exact


# ============================================================================= knock-out
def channel_means(model: torch.nn.Module, block: str, images: torch.Tensor, mean, std) -> torch.Tensor:
    """Mean activation of each output channel of ``block`` over ``images`` (uint8), in eval mode."""
    from ml.augment import normalize

    module = model.get_submodule(block)
    sums: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: sums.append(out.float().mean(dim=(2, 3)).sum(0)))
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(images), 500):
                model(normalize(images[i : i + 500], mean, std))
    finally:
        handle.remove()
    return torch.stack(sums).sum(0) / len(images)


def zero_channels_hook(block: str, channels: torch.Tensor):
    """A function that registers a forward hook zeroing ``channels`` of ``block``'s output."""
    idx = torch.as_tensor(channels, dtype=torch.long)

    def register(model: torch.nn.Module):
        def hook(_m, _i, out):
            out = out.clone()
            out[:, idx] = 0
            return out

        return model.get_submodule(block).register_forward_hook(hook)

    return register


def knockout(cfg: dict[str, Any], ckpt_path: str) -> dict[str, Any]:
    """Zero the k lowest- and k highest-mean channels of ``cfg['block']`` (no retraining)."""
    from ml.checkpoint import load_model
    from ml.data import stratified_split
    from ml.evaluate import data_spec_of, load_eval_data

    block = cfg.get("block", "blocks.1")
    fractions = [float(f) for f in cfg.get("fractions", [0.1, 0.25, 0.5])]
    tta = int(cfg.get("tta", 0))
    model, ckpt = load_model(ckpt_path)
    spec = data_spec_of(ckpt)
    full, _ = load_eval_data(spec, "all")
    train_idx, _ = stratified_split(full.labels, spec["val_per_class"], spec.get("split_seed", 0))
    n_images = int(cfg.get("images", 5000))
    pick = np.random.default_rng(0).permutation(train_idx)[:n_images]
    means = channel_means(
        model, block, torch.from_numpy(full.images[pick]), torch.tensor(ckpt["mean"]), torch.tensor(ckpt["std"])
    )
    order = torch.argsort(means)
    n_ch = len(means)
    intact, labels = checkpoint_probs(ckpt_path, tta)
    correct0 = intact.argmax(1) == labels
    rows = []
    for frac in fractions:
        k = max(1, int(round(frac * n_ch)))
        for side, chans in (("lowest", order[:k]), ("highest", order[-k:])):
            probs, _ = checkpoint_probs(ckpt_path, tta, hooks=[zero_channels_hook(block, chans)])
            correct = probs.argmax(1) == labels
            test = mcnemar_exact(correct0, correct)
            rows.append(
                {
                    "fraction": frac,
                    "k": k,
                    "side": side,
                    "accuracy": float(correct.mean()),
                    "drop": float(correct0.mean() - correct.mean()),
                    "mcnemar_p": test["p_value"],
                    "b": test["b"],
                    "c": test["c"],
                }
            )
    adjusted = holm([r["mcnemar_p"] for r in rows])
    for r, p in zip(rows, adjusted, strict=True):
        r["holm_p"] = p
    return {
        "checkpoint": ckpt_path,
        "block": block,
        "channels": n_ch,
        "images": len(pick),
        "tta": tta,
        "intact_accuracy": float(correct0.mean()),
        "channel_means": means.tolist(),
        "rows": rows,
    }
