"""A re-export that fails or is interrupted leaves the old bundle exactly as it was; one that
succeeds replaces it whole (`ml.export.staging`)."""

import hashlib
import os
from pathlib import Path

import pytest

from ml import export
from ml.export import command, staging
from worker.runtime.bundle import load_bundle, read_manifest


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name != out.name)


@pytest.fixture
def bundle(tiny, tmp_path) -> tuple[Path, list[str]]:
    """A two-member bundle with a report, a hand-written TRAINING.md and its members/."""
    out = tmp_path / "bundles" / "default"
    export.main([*map(str, tiny["ckpts"]), "--out", str(out), "--tta", "1", "--save-members", "--ood-per-kind", "8"])
    (out / "report" / "TRAINING.md").write_text("# How it was trained\n")
    members = [str(p) for p in sorted((out / "members").glob("*.pt"))]
    return out, members


def fail_with(exc: BaseException):
    def boom(*args, **kwargs):
        raise exc

    return boom


@pytest.mark.parametrize(
    ("step", "exc"),
    [
        ("evaluate_written_bundle", SystemExit("the written module's probabilities differ")),
        ("write_calibration_report", OSError(28, "No space left on device")),
        ("calibrate_on_validation", KeyboardInterrupt()),
        ("save_members", RuntimeError("disk full while writing members")),
    ],
)
def test_a_failed_in_place_reexport_leaves_the_old_bundle_as_it_was(bundle, monkeypatch, step, exc):
    out, members = bundle
    before = snapshot(out)
    monkeypatch.setattr(command, step, fail_with(exc))
    with pytest.raises(type(exc)):
        export.main([*members, "--out", str(out), "--tta", "0", "--save-members", "--overwrite", "--ood-per-kind", "8"])
    assert snapshot(out) == before  # module, manifest, members, report and TRAINING.md, byte for byte
    assert leftovers(out) == []  # no staging folder or moved-aside report beside it
    assert load_bundle(out, precision="fp32").manifest.extra["tta"] == 1  # still loads, checksum and all


def test_a_successful_reexport_replaces_the_bundle_whole_and_keeps_hand_written_files(bundle):
    out, members = bundle
    old = read_manifest(out)
    export.main([*members, "--out", str(out), "--tta", "0", "--save-members", "--overwrite", "--ood-per-kind", "8"])
    new = read_manifest(out)
    assert new.extra["tta"] == 0 and new.sha256 != old.sha256  # another module (TTA level 0)
    assert new.metrics["n"] == old.metrics["n"] and (out / "report" / "report.json").is_file()
    assert (out / "report" / "TRAINING.md").read_text() == "# How it was trained\n"
    assert [m["member_file"] for m in new.members] == [f"members/{Path(m).name}" for m in members]
    assert load_bundle(out, precision="fp32").manifest.sha256 == new.sha256
    assert leftovers(out) == []


def test_replace_folder_puts_the_old_folder_back_when_the_second_rename_fails(tmp_path, monkeypatch):
    out, new, aside = tmp_path / "b", tmp_path / "new", tmp_path / "aside"
    out.mkdir()
    (out / "model.pt").write_text("old")
    new.mkdir()
    (new / "model.pt").write_text("new")
    real = os.replace
    calls = []

    def flaky(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:
            raise PermissionError(13, "Permission denied", str(dst))
        real(src, dst)

    monkeypatch.setattr(staging.os, "replace", flaky)
    with pytest.raises(PermissionError):
        staging.replace_folder(new, out, aside=aside)
    assert calls == [("b", "aside"), ("new", "b"), ("aside", "b")]
    assert (out / "model.pt").read_text() == "old" and (new / "model.pt").read_text() == "new"


def test_carry_over_report_copies_only_what_the_new_report_lacks(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    (old / "studies" / "ablation").mkdir(parents=True)
    (old / "studies" / "ablation" / "report.md").write_text("study")
    (old / "TRAINING.md").write_text("hand-written")
    (old / "report.json").write_text("old evaluation")
    (old / "confusion.png").write_bytes(b"old figure")
    new.mkdir()
    (new / "report.json").write_text("new evaluation")
    assert staging.carry_over_report(old, new) == ["TRAINING.md", "confusion.png", "studies"]
    assert (new / "report.json").read_text() == "new evaluation"
    assert (new / "studies" / "ablation" / "report.md").read_text() == "study"
    assert (old / "TRAINING.md").is_file()  # the old folder is only read
    dropped = tmp_path / "dropped"
    assert staging.carry_over_report(old, dropped, drop_report=True) == ["TRAINING.md", "studies"]
    assert staging.carry_over_report(tmp_path / "missing", new) == []
