"""Compare two builds of fastconv case by case, process by process.

    python bench/compare_builds.py --base /path/to/old/tree --new /path/to/new/tree \
        --cases resnet_3x3_64 wrap_small --rounds 3

Each tree is a source checkout with its extensions built in place (`python setup.py
build_ext --inplace`). For every round and case, `python -m fastconv bench --cases CASE
--peers torch fastconv.torch` runs once in each build (the order alternates per round), and
the table gives per case and implementation the median over the rounds in each build, the
ratio new/base and the per-round ratios. PyTorch's rows run the same code in both: their
ratios show how much the machine itself drifted. Two builds of one package cannot be imported
into one process, so this is the side-by-side that a shared machine allows.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="tree of the reference build")
    parser.add_argument("--new", required=True, help="tree of the build to compare")
    parser.add_argument("--cases", nargs="+", required=True, help="exact case names")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--python", default=sys.executable)
    opts = parser.parse_args(argv)
    builds = {"base": os.path.abspath(opts.base), "new": os.path.abspath(opts.new)}
    times = defaultdict(lambda: defaultdict(list))   # (case, impl) -> build -> [ms]
    for r in range(opts.rounds):
        for case in opts.cases:
            for build in (list(builds) if r % 2 == 0 else list(builds)[::-1]):
                with tempfile.NamedTemporaryFile(suffix=".json") as f:
                    subprocess.run([opts.python, "-m", "fastconv", "bench", "--cases", case,
                                    "--peers", "torch", "fastconv.torch", "--no-progress",
                                    "--json", f.name],
                                   env=dict(os.environ, PYTHONPATH=builds[build]),
                                   cwd=tempfile.gettempdir(), capture_output=True, check=True)
                    for row in json.load(open(f.name))["results"]:
                        if row["case"] == case and "median_s" in row:
                            times[(case, row["impl"])][build].append(row["median_s"] * 1e3)
        print(f"round {r + 1} of {opts.rounds} done", file=sys.stderr, flush=True)
    print(f"{'case':24s} {'impl':16s} {'base ms':>9s} {'new ms':>9s} {'new/base':>9s}  per round")
    for (case, impl), by_build in times.items():
        base, new = by_build["base"], by_build["new"]
        per_round = ", ".join(f"{n / b:.2f}" for b, n in zip(base, new))
        print(f"{case:24s} {impl:16s} {statistics.median(base):9.3f} "
              f"{statistics.median(new):9.3f} "
              f"{statistics.median(new) / statistics.median(base):9.3f}  ({per_round})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
