"""Distillation in the fast recipe (ml/speedrun/distill.py): the loss, the teacher ensemble, the option."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ml.checkpoint import load_model
from ml.speedrun import main
from ml.speedrun.distill import Teacher, distill_loss, teacher_paths

TINY = ["val_per_class=5", "epochs=1", "batch_size=16", "width=0.125", "precision=fp32", "targets=0.0"]


def test_distill_loss_mixes_labels_and_teacher() -> None:
    torch.manual_seed(0)
    logits, y = torch.randn(8, 4), torch.randint(0, 4, (8,))
    hard = F.cross_entropy(logits, y, label_smoothing=0.2, reduction="sum")
    own = F.softmax(logits / 3.0, dim=1)  # a teacher that agrees with the student: KL 0
    assert torch.allclose(distill_loss(logits, y, own, alpha=0.0, temperature=3.0, label_smoothing=0.2), hard)
    assert distill_loss(logits, y, own, alpha=1.0, temperature=3.0, label_smoothing=0.2).abs() < 1e-5
    other = F.softmax(torch.randn(8, 4), dim=1)
    kl = F.kl_div(F.log_softmax(logits / 3.0, dim=1), other, reduction="sum") * 9.0
    mixed = distill_loss(logits, y, other, alpha=0.25, temperature=3.0, label_smoothing=0.2)
    assert torch.allclose(mixed, 0.75 * hard + 0.25 * kl) and kl > 0


def test_teacher_paths_take_files_and_folders_and_refuse_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "members").mkdir()
    for name in ("b.pt", "a.pt"):
        (tmp_path / "members" / name).write_bytes(b"x")
    assert [p.name for p in teacher_paths(str(tmp_path / "members"))] == ["a.pt", "b.pt"]
    assert teacher_paths(f"{tmp_path}/members/b.pt") == [tmp_path / "members" / "b.pt"]
    with pytest.raises(SystemExit, match="no such checkpoint"):
        teacher_paths(str(tmp_path / "nothing.pt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="holds no .pt"):
        teacher_paths(str(tmp_path / "empty"))


def test_speedrun_with_a_teacher_trains_a_student(shared_image_folder: Path, tmp_path: Path, ml_cache, capsys) -> None:
    out = tmp_path / "runs"
    main([f"data={shared_image_folder}", *TINY, "seeds=0", f"out_dir={out}", "name=teacher"])
    teacher_ckpt = next(out.glob("*-teacher-s0")) / "best.pt"
    main([f"data={shared_image_folder}", *TINY, "seeds=1", f"out_dir={out}", "name=student", f"teacher={teacher_ckpt}"])
    assert "distilled from 1 teacher(s)" in capsys.readouterr().out
    student_dir = next(out.glob("*-student-s1"))
    _, ckpt = load_model(student_dir / "best.pt")
    assert ckpt["config"]["teacher"] == str(teacher_ckpt)  # the run records what it learnt from

    # The teacher's probabilities: its own normalisation, whatever the student's statistics are.
    model, tckpt = load_model(teacher_ckpt)
    raw = torch.rand(3, 3, 32, 32)
    t_mean, t_std = torch.tensor(tckpt["mean"])[None, :, None, None], torch.tensor(tckpt["std"])[None, :, None, None]
    s_mean, s_std = torch.tensor([0.3, 0.4, 0.5]), torch.tensor([0.2, 0.25, 0.3])
    teacher = Teacher(str(teacher_ckpt), tckpt["classes"], s_mean, s_std, torch.device("cpu"), None)
    got = teacher.probs((raw - s_mean[None, :, None, None]) / s_std[None, :, None, None], 2.0)
    with torch.no_grad():
        want = F.softmax(model((raw - t_mean) / t_std) / 2.0, dim=1)
    assert torch.allclose(got, want, atol=1e-5)
    with pytest.raises(SystemExit, match="classes"):
        Teacher(str(teacher_ckpt), ["a", "b"], s_mean, s_std, torch.device("cpu"), None)
