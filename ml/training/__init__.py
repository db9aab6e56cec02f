"""The parts of ``python -m ml train`` (`ml.train`), one module per section of `ml.train.train`:

* `config`: `TrainConfig` and `load_config`; the runtime (rank, world size, device, precision),
  the architecture a fine-tuning checkpoint imposes, and the run folder.
* `data`: the training and validation tensors on the device, and the normalisation.
* `model`: the model with ``init_from`` and ``freeze`` applied, its EMA, and `infer` (logits).
* `optim`: parameter groups, the optimiser, the learning-rate schedule, and resuming.
* `loop`: one epoch of training, its validation, its metrics row, and the checkpoint payload.

`ml.train` re-exports the public names (`TrainConfig`, `load_config`, `param_groups`, `lr_factor`,
`EMA`, `infer`).
"""
