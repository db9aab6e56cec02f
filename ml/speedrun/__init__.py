"""Train the fast net (``model=fastnet``) with the fast-training recipe, and time it to accuracy.

    python -m ml speedrun seeds=0,1,2                       # time to 93% / 94%, mean +- std over seeds
    python -m ml speedrun --config ml/configs/fastnet.yaml seeds=0 name=fast-s0
    python -m ml speedrun epochs=2 train_limit=2000 seeds=0 # a smoke run

The recipe follows the published airbench line (Jordan 2024, arXiv 2404.00498; Page's ResNet-9 and
hlb-CIFAR10 before it), re-implemented here from the paper's description:
- the net: a frozen 2x2 patch-whitening conv initialised from training patches, three groups of
  3x3 conv + max-pool + batch norm (scale fixed at 1) + GELU, a 3x3 max-pool and a linear head
  scaled by 1/9 (``ml.models.FastNet``);
- Nesterov SGD on a summed label-smoothed loss with batch 1024, learning rate and weight decay given
  per 1024 images and decoupled from each other, a 64x learning rate on batch-norm biases; a
  triangular schedule (0.2 -> 1 at 23% -> 0.07); the whitening bias trained for 3 epochs only;
- a lookahead EMA: every 5 steps the weights are pulled back to a moving average whose decay
  rises from 0 to 0.95^5 with the cube of progress; the final weights are the average;
- augmentation on batched tensors: a flip that alternates per image across epochs (random on the
  first) and a random translation of up to 2 pixels (reflect padding);
- evaluation with test-time augmentation (mirror + one-pixel translations, ``ml.tta``);
- optional knowledge distillation (``teacher=bundles/default/members``, ``distill_alpha``,
  ``distill_temperature``; ``ml.speedrun.distill``): the student also learns the teacher
  ensemble's softened predictions on the same augmented batch (about 2.2x the time per step);
- optional mixup (``mixup=<alpha>``, ``ml.speedrun.recipe.mix``): each batch blended with a seeded
  permutation of itself by one Beta(alpha, alpha) weight, labels likewise; with a teacher, the
  teacher labels the blended images ("function matching").

Every ``eval_every`` epochs the current weights are evaluated on the validation split (the seeded
500-per-class hold-out of ``data``) with TTA; evaluation is clocked apart from training, and the
training seconds at which validation first reaches each of ``targets`` are recorded. Each seed
writes a run folder like ``ml train`` does (``config.yaml``, ``metrics.csv``, ``best.pt`` =
``checkpoint.pt`` = the final weights, in the ``ml.checkpoint`` format, so ``ml export`` and
``ml evaluate`` take it), and the command prints and writes ``speedrun.json`` with the summary.

Measured: see the README's "Offline ML" section (hardware, images/s, times to 93% and 94%).
"""

from __future__ import annotations

# The package: run (the config and one seed's run, top to bottom), recipe (optimiser, schedule,
# lookahead, augmentation, TTA evaluation), summary (mean ± std and time to accuracy over seeds),
# cli (the command). The names below are its interface.
from ml.speedrun.cli import main
from ml.speedrun.config import SpeedrunConfig
from ml.speedrun.recipe import Lookahead, alternating_flip, augment, evaluate_logits, nesterov_sgd, set_lr, triangle
from ml.speedrun.run import load_split, train_one
from ml.speedrun.summary import mean_std, print_summary, summarise

__all__ = [
    "Lookahead",
    "SpeedrunConfig",
    "alternating_flip",
    "augment",
    "evaluate_logits",
    "load_split",
    "main",
    "mean_std",
    "nesterov_sgd",
    "print_summary",
    "set_lr",
    "summarise",
    "train_one",
    "triangle",
]
