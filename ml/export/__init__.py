"""Export one or more trained models as the model bundle the worker loads (worker/runtime/bundle.py).

    python -m ml export runs/<run>/best.pt [more checkpoints ...] --out bundles/<name>
    python -m ml export runs/<a>/best.pt runs/<b>/best.pt runs/<c>/best.pt --out bundles/default \
        --tta 2 --save-members --overwrite
    python -m ml export bundles/default/members/*.pt --out bundles/default --tta 2 --save-members --overwrite

The TorchScript module takes uint8 N x 3 x H x W RGB and returns N x C probabilities: it
normalises with each member's own mean and std, runs the members with test-time augmentation
(``--tta 0|1|2``: none, mirror, mirror + one-pixel translations, `ml.tta`; ``--flip-tta`` is
``--tta 1``) averaging their logits, divides them by the temperature, softmaxes, and averages the
members' probabilities. ``--max-tta L`` (default: the ``--tta`` level) makes the module carry
the levels up to L, each with its own fitted temperature: it still runs at ``--tta``, and the
worker switches to any level up to L with ``WORKER_TTA`` (fewer views for images/s, more for
accuracy; the report's calibration.md gives each level's accuracy, ECE and NLL). Two more exported methods: ``scores(images)`` (probabilities, per-member
probabilities and logits, ``ood_score``) and ``explain(images, class_index=None, top_k=5)``
(the same plus Grad-CAM maps of each member's ``cam_layer``, members' maps averaged); the
worker calls ``explain`` when the module has it (worker/runtime/explain.py).

Calibration and thresholds (unless ``--no-report``): the validation images (the checkpoints'
held-out split; ``--data``/``--split`` to change) are split in two seeded, stratified halves
(``--calibration-seed``). On the fit half the command fits the temperature (minimum NLL of the
ensemble), chooses the ``uncertain`` threshold on the calibrated top probability (the smallest at
which the answers kept are ``--uncertain-accuracy`` right) and the OOD threshold on ``ood_score``
(flags at most ``--ood-max-flagged`` of the validation images); on the report half it measures
ECE and NLL before and after, the share flagged and the accuracy above and below the threshold,
and the AUROC of ``ood_score`` against generated non-CIFAR images (`ml.ood.generate`). The
manifest stores ``calibration``, ``uncertain``, ``ood`` and ``explain``; ``report/`` gets
calibration.md, calibration.json, reliability_uncalibrated.png, reliability_calibrated.png and
ood_scores.png beside the evaluation of the whole validation split (report.json, report.md,
figures; headline metrics also in the manifest). The manifest's ``command`` is this command line.

``--int8`` also writes ``model-int8.pt``: the same ensemble with int8 members (`ml.quantize`:
post-training static quantisation, activation ranges from 2,048 seeded training images, never
the validation split), for the worker's ``WORKER_PRECISION=int8`` on the CPU; the manifest's
``int8`` entry names it with its SHA-256, its precisions list "int8", and the report's
precision.json gives its accuracy and how often it agrees with fp32.

``model.pt`` stores the members' weights in half precision (``--weights float16``, the default:
half the file; the manifest's ``weights`` tells the worker, which converts them to fp32 or bf16 on
loading). The members are rounded to half precision before anything is measured, so the
calibration and the report describe the module as stored; ``--weights float32`` keeps them as
they are.

``--save-members`` writes each member's weights in half precision (with arch, options, classes,
mean/std, metrics, config and its metrics.csv; no optimiser) to ``<bundle>/members/*.pt`` in
the `ml.checkpoint` format; those files are valid input, so a bundle can be re-exported (other
TTA, new methods, another calibration) without training. A re-export keeps the old report's files
it does not write itself (TRAINING.md, training logs and configs, ``studies/``).

The new bundle is written into a staging folder beside ``--out`` and replaces the old one only
when everything (module, manifest, members, report) has been written and checked
(`ml.export.staging`): a failed or interrupted export leaves the old bundle as it was.

The module itself is `ml.bundle_module` (Member, Ensemble, build_ensemble); the calibration,
thresholds, per-TTA-level temperatures and the bf16 check are `ml.bundle_calibration`.

Measured on the 2-core CPU dev machine (shared with a training job): one ResNet-20 checkpoint, export plus
report on 5,000 validation images, 60 s wall, 22 s CPU; the bundle's accuracy equals the checkpoint's
recorded val_acc (56.30% at epoch 3).
"""

from ml.bundle_module import Ensemble, Member, build_ensemble, cam_layer_of
from ml.export.bundle import export_bundle, module_precisions, round_to_storage, save_member
from ml.export.command import main
from ml.export.inputs import load_members
from ml.export.report import bundle_metrics
from ml.export.staging import REPORT_FILES

# the package's parts: bundle (writing model.pt, the manifest, members/), inputs (the command line,
# the checkpoints and the data), fit (calibration and thresholds), report (report/ and the printed
# summary), staging (the new bundle written beside the old one, swapped in when all succeeded),
# command (main, the steps in order)
__all__ = [
    "REPORT_FILES",
    "Ensemble",
    "Member",
    "build_ensemble",
    "bundle_metrics",
    "cam_layer_of",
    "export_bundle",
    "round_to_storage",
    "load_members",
    "main",
    "module_precisions",
    "save_member",
]
