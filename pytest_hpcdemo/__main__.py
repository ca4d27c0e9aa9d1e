"""``python -m pytest_hpcdemo`` (console script ``pytest-hpcdemo``), two commands:

* ``compare [RUNS...]``: the history of every benchmark and claim over saved runs, and the gate
  applied to the last run against the one before it, without re-running the suite;
* ``continuous BASE [HEAD] [-- PYTEST-ARGS]``: two revisions run in interleaved sessions and
  compared pair by pair (gate/continuous.py).

Exit status: 0 no regression (or nothing to compare), 1 a regression, 2 bad arguments or an
unreadable history file (one line naming it on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .gate import continuous, history
from .gate.options import add_threshold_options


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pytest-hpcdemo", description=__doc__.split("\n\n")[0])
    commands = p.add_subparsers(dest="command", required=True)
    c = commands.add_parser("compare", help="history of saved runs, and the gate on the last one")
    c.add_argument("runs", nargs="*", metavar="RUN",
                   help="history files, run numbers or name prefixes (0003, 0003_abc), or globs; "
                        "default: every saved run of this machine, oldest first")
    c.add_argument("--storage", default="file://./.benchmarks",
                   help="pytest-benchmark's storage (default: file://./.benchmarks)")
    c.add_argument("--machine", default=history.machine_id(),
                   help="the storage sub-folder to read (default: this interpreter's, %(default)s)")
    add_threshold_options(c.add_argument)  # the same as the plugin's --hpc-gate-*
    c.add_argument("--force", action="store_true",
                   help="compare even when the runs' parallel stacks differ in what changes results "
                        "(CPU model, cores, BLAS threads, MPI, Python, ...); the report says so")
    c.add_argument("-v", "--verbose", action="store_true", help="list unchanged series too")
    continuous.add_parser(commands)
    return p


def compare(args: argparse.Namespace) -> int:
    try:
        thresholds = history.Thresholds(args.min_effect, args.alpha, args.both, args.busy)
    except ValueError as exc:
        print(f"pytest-hpcdemo compare: {exc}", file=sys.stderr)
        return 2
    try:
        storage = history.storage_path(args.storage)
        history.check_folder(storage / args.machine, "--storage", write=False)
        files = history.resolve_runs(args.runs, storage, args.machine)
        if args.runs:  # named runs must all be readable
            runs = [history.load_run(f) for f in files]
        else:  # the whole history: an unreadable file is skipped, and named
            runs, warnings = history.load_history(files)
            for warning in warnings:
                print(f"pytest-hpcdemo compare: {warning}", file=sys.stderr)
    except history.HistoryError as exc:
        print(f"pytest-hpcdemo compare: {exc}", file=sys.stderr)
        return 2
    if not runs:
        print(f"no saved runs in {storage / args.machine}: nothing to compare")
        return 0
    for line in history.history_table(runs):
        print(line)
    if len(runs) < 2:
        print("one run only: nothing to compare")
        return 0
    result = history.compare(runs[-2], runs[-1], thresholds, runs[:-1], force=args.force)
    for line in result.lines(verbose=args.verbose):
        print(line)
    return 1 if result.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)  # what follows -- goes to pytest
    args = parser().parse_args(argv[:cut])
    if args.command == "continuous":
        return continuous.run(args, argv[cut + 1:])
    if cut < len(argv):
        parser().error("arguments after -- are for continuous only")
    return compare(args)


if __name__ == "__main__":
    sys.exit(main())
