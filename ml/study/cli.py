"""``python -m ml study``: run what is missing, test the hypotheses, write the report."""

import argparse
import copy
import json
import shlex
import time
from pathlib import Path

from ml.study.config import Study, load_study
from ml.study.knockout import knockout
from ml.study.plan import _hash, estimate_s, plan
from ml.study.report import write_report
from ml.study.runs import execute


# ============================================================================= CLI
def run_study(study: Study, only: list[str] | None = None, dry_run: bool = False, command: str = "") -> Path | None:
    runs = plan(study)
    wanted = set(only or [c.name for c in study.conditions])
    unknown = wanted - {c.name for c in study.conditions}
    if unknown:
        raise ValueError(f"--only: unknown conditions {', '.join(sorted(unknown))}")
    todo = [r for c in study.conditions if c.name in wanted for r in runs[c.name] if not r.done]
    print(f"study {study.name}: {len(study.conditions)} conditions x {len(study.seeds)} seeds -> {study.report_dir}")
    total = 0.0
    for c in study.conditions:
        for r in runs[c.name]:
            est = 0.0 if r.done else estimate_s(r)
            total += est if c.name in wanted else 0.0
            state = "done" if r.done else ("todo" if c.name in wanted else "skipped (--only)")
            print(f"  {c.name:<22} seed {str(r.seed):<4} {state:<17} ~{est / 60:5.1f} min  {r.folder}")
    print(f"{len(todo)} runs to do, estimated {total / 60:.0f} min on 2 CPU cores")
    if dry_run:
        return None
    t0 = time.perf_counter()
    for i, r in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {r.condition.name} seed {r.seed} -> {r.folder}", flush=True)
        res = execute(r, runs)
        print(f"[{i}/{len(todo)}] {r.condition.name} seed {r.seed}: accuracy {100 * res['accuracy']:.2f}%", flush=True)
    knock = None
    if study.knockout:
        source = runs[study.knockout["condition"]]
        if source and source[0].done:
            cache = study.runs_dir / f"knockout-{_hash([str(source[0].folder), study.knockout])}.json"
            if cache.is_file():
                knock = json.loads(cache.read_text())
            else:
                print(f"knock-out on {source[0].checkpoint()}", flush=True)
                knock = knockout(study.knockout, source[0].checkpoint())
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_text(json.dumps(knock, indent=2))
    path = write_report(
        study, runs, command or f"python -m ml study {study.config_path}", knock, time.perf_counter() - t0
    )
    print(f"report: {path}")
    return path


def main(argv: list[str]) -> None:
    import ml.study  # the package's docstring is the command's manual

    parser = argparse.ArgumentParser(
        prog="python -m ml study", description=ml.study.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", help="study YAML (ml/configs/studies/*.yaml)")
    parser.add_argument("--only", default="", help="comma-separated conditions to run (others are reported if done)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the estimated budget; run nothing")
    parser.add_argument("--report-dir", default="", help="write the report here instead of the config's report_dir")
    args = parser.parse_args(argv)
    try:
        study = load_study(args.config)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        parser.error(str(exc))
    if args.report_dir:
        study = copy.copy(study)
        study.report_dir = Path(args.report_dir)
    only = [s.strip() for s in args.only.split(",") if s.strip()] or None
    run_study(study, only=only, dry_run=args.dry_run, command=shlex.join(["python", "-m", "ml", "study", *argv]))
