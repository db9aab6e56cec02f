"""Replacing a bundle folder all at once: the new bundle is written into a staging folder beside
the old one and swapped in only when the whole export has succeeded.

A failure anywhere in between (calibration, scripting, the check of the written module, the
report, Ctrl-C) removes the staging folder and leaves the old bundle exactly as it was: a worker
that loads it meanwhile, or afterwards, finds the old module, manifest, members and report.

The swap is two renames in the same parent folder (old -> aside, new -> in place); if the second
fails the first is undone. Between them (microseconds) the bundle path does not exist; a process
killed exactly there leaves the old bundle in ``.<name>.export-*/previous`` beside it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# what an export's report writes: after --no-report the old ones describe another module, so go
REPORT_FILES = ("report.json", "report.md", "predictions.npz", "calibration.md", "calibration.json", "precision.json")


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield the path (not yet created) to write the new bundle into. When the block ends without
    an exception it replaces ``out``; on any exception (SystemExit and KeyboardInterrupt included)
    it is removed and ``out`` is untouched."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    new = work / out.name
    try:
        yield new
        if not new.is_dir():
            raise RuntimeError(f"the export wrote nothing to {new}")
        replace_folder(new, out, aside=work / "previous")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def replace_folder(new: Path, out: Path, *, aside: Path) -> None:
    """Put the folder ``new`` at ``out``; an existing ``out`` is moved to ``aside`` first (and moved
    back if the second rename fails). Both must be on the file system of ``out``'s parent."""
    if not out.exists():
        os.replace(new, out)
        return
    os.replace(out, aside)
    try:
        os.replace(new, out)
    except BaseException:
        os.replace(aside, out)
        raise


def carry_over_report(old_report: Path, new_report: Path, *, drop_report: bool = False) -> list[str]:
    """Copy into ``new_report`` the old report's files and folders that the new export has not
    written (the hand-written TRAINING.md, training logs and configs, ``studies/``); with
    ``drop_report`` (``--no-report``) not the old evaluation files and figures, which describe
    another module. The old folder is only read. Returns the names copied."""
    if not old_report.is_dir():
        return []
    copied = []
    for entry in sorted(old_report.iterdir()):
        stale = drop_report and (entry.name in REPORT_FILES or entry.suffix == ".png")
        target = new_report / entry.name
        if stale or target.exists():
            continue
        new_report.mkdir(parents=True, exist_ok=True)
        if entry.is_dir():
            shutil.copytree(entry, target, symlinks=True)
        else:
            shutil.copy2(entry, target)
        copied.append(entry.name)
    return copied
