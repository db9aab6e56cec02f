"""Entry point: ``python -m ml <command> [args]``. Each command lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "download": ("ml.download", "fetch the official CIFAR-10/100 archives (md5-checked)"),
    "train": ("ml.train", "train one model (config dataclass, YAML, key=value overrides)"),
    "evaluate": ("ml.evaluate", "evaluate a checkpoint or bundle: report.json and PNGs"),
    "ensemble": ("ml.ensemble", "evaluate an ensemble of checkpoints (mean probability, majority vote)"),
    "compare": ("ml.compare", "McNemar's exact test and bootstrap intervals between two models"),
    "export": ("ml.export", "write the TorchScript model bundle the worker loads"),
    "conformal": ("ml.conformal.command", "fit a bundle's prediction sets (coverage-guaranteed) from its report"),
    "speedrun": ("ml.speedrun", "train the fast net with the fast recipe; time to 93%/94% over seeds"),
    "study": ("ml.study", "run a study (conditions x seeds from YAML), test its hypotheses, write the report"),
    "recompress": ("ml.recompress", "copy an image folder through more JPEG passes (the JPEG-cost experiment)"),
    "bench": ("ml.bench", "training throughput (images/s) and epoch time on this device"),
    "models": ("ml.models", "list registered models with parameters and MACs"),
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m ml", description=__doc__)
    parser.add_argument(
        "command",
        choices=sorted(COMMANDS),
        # argparse %-formats help strings: a literal % (time to 93%/94%) must be written %%
        help="; ".join(f"{k}: {v[1]}" for k, v in sorted(COMMANDS.items())).replace("%", "%%"),
    )
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return
    args = parser.parse_args(argv[:1])
    importlib.import_module(COMMANDS[args.command][0]).main(argv[1:])


if __name__ == "__main__":
    main()
