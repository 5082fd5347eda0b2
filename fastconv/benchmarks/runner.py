"""The ``python -m fastconv bench`` report: median times and speedups against each peer."""
import json
import statistics
import time

import numpy as np

import fastconv
from fastconv.benchmarks import PeerUnavailable, all_cases

PEERS = ("numpy", "torch", "scipy", "opencv")


def time_side_by_side(fns, min_time=0.3, max_rounds=30, min_rounds=3, burst=0.02, settle=0.15):
    """Median wall time (s) of each zero-argument callable in `fns` (a dict), measured in
    interleaved rounds so that a machine slowing down or speeding up affects all of them alike
    and their ratios stay meaningful. In each round every callable runs a short burst (about
    `burst` seconds) after a pause of `settle` seconds, and the burst's first call is not timed:
    other libraries' thread pools (OpenBLAS's, OpenCV's) keep spinning for up to ~0.1 s after
    their last call, and would otherwise steal the cores from whichever library runs next."""
    per_call = {}
    for name, fn in fns.items():    # warm-up: caches, lazy initialization, JIT of peers
        fn()
        t0 = time.perf_counter()
        fn()
        per_call[name] = max(time.perf_counter() - t0, 1e-6)
    times = {name: [] for name in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or (time.perf_counter() - start
                                  < (min_time + settle * (len(fns) > 1)) * len(fns)
                                  and rounds < max_rounds):
        for name, fn in fns.items():
            if len(fns) > 1:
                time.sleep(settle)
            fn()
            for _ in range(max(1, min(50, int(burst / per_call[name])))):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        rounds += 1
    return {name: (statistics.median(t), len(t)) for name, t in times.items()}


def copy_bandwidth(threads=None, nbytes=64 * 2**20, repeats=9):
    """GB/s (bytes read + written) of a plain copy of an array larger than the caches, split
    across `threads` threads (NumPy releases the GIL while it copies): the roofline that the
    memory-bound cases' GB/s are read against, measured in the same run since these machines'
    bandwidth drifts. Cases whose data fits in the last-level cache can exceed it."""
    from concurrent.futures import ThreadPoolExecutor
    threads = threads or fastconv.get_num_threads()
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    bounds = np.linspace(0, src.size, threads + 1).astype(int)
    parts = [(dst[a:b], src[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    times = []
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats + 1):     # the first copy faults the pages in, not timed
            t0 = time.perf_counter()
            list(pool.map(lambda part: np.copyto(*part), parts))
            times.append(time.perf_counter() - t0)
    return 2 * src.nbytes / statistics.median(times[1:]) / 1e9


def _progress(items, enabled):
    if not enabled:
        return items
    try:
        from tqdm import tqdm
        return tqdm(items, desc="fastconv bench", unit="case", leave=False)
    except ImportError:
        return items


def run(case_filter=None, impl_filter=None, min_time=0.2, progress=True, algorithms=False):
    """Time every case's implementations side by side; returns a list of result dicts."""
    # the frameworks family (wrappers, an 8192^2 Dask case needing ~12 GiB) and the models
    # family (whole networks, minutes) run only by name
    cases = [c for c in all_cases()
             if (any(f in c.name for f in case_filter) if case_filter
                 else c.family not in ("frameworks", "models"))]
    results = []
    for case in _progress(cases, progress):
        inputs = case.make_inputs()
        fns, rows = {}, {}
        for impl in case.impls:
            forced = impl.startswith("fastconv[")
            if impl != "fastconv" and (forced != algorithms
                                       or (impl_filter and not forced
                                           and impl not in impl_filter)):
                continue
            rows[impl] = {"case": case.name, "family": case.family, "impl": impl,
                          "description": case.description}
            try:
                fns[impl] = case.callable_for(impl, inputs)
            except PeerUnavailable as why:
                rows[impl]["skipped"] = str(why)
        for impl, (median, repeats) in time_side_by_side(fns, min_time, **case.timing).items():
            row = rows[impl]
            row["median_s"], row["repeats"] = median, repeats
            if case.flops:
                row["gflops"] = case.flops(inputs) / median / 1e9
            if case.bytes_moved:
                row["gbytes_per_s"] = case.bytes_moved(inputs) / median / 1e9
        results += rows.values()
    return results


def format_table(results, copy_gbps=None):
    """One line per case: fastconv's median and, per peer, its median and fastconv's speedup;
    memory-bound cases also their GB/s and, given `copy_gbps`, its share of that."""
    by_case = {}
    for r in results:
        by_case.setdefault(r["case"], {})[r["impl"]] = r
    impls = []
    for r in results:
        if r["impl"] not in impls and r["impl"] != "fastconv":
            impls.append(r["impl"])
    header = f"{'case':<28}{'fastconv':>12}" + "".join(f"{i:>24}" for i in impls)
    lines = [header, "-" * len(header)]
    for case, rows in by_case.items():
        mine = rows.get("fastconv", {}).get("median_s")
        extra = ""
        if "gflops" in rows.get("fastconv", {}):
            extra = f"  {rows['fastconv']['gflops']:.0f} GFLOP/s"
        if "gbytes_per_s" in rows.get("fastconv", {}):
            gbps = rows['fastconv']['gbytes_per_s']
            extra += f"  {gbps:.1f} GB/s"
            if copy_gbps:
                extra += f" ({100 * gbps / copy_gbps:.0f}% of copy)"
        line = f"{case:<28}{_ms(mine):>12}"
        for impl in impls:
            r = rows.get(impl)
            if r is None or "median_s" not in r:
                line += f"{'-':>24}"
            else:
                ratio = f"({r['median_s'] / mine:.2f}x)" if mine else ""
                line += f"{_ms(r['median_s']) + ' ' + ratio:>24}"
        lines.append(line + extra)
    lines.append("times are medians in ms; (Nx) = peer time / fastconv time, above 1 means "
                 "fastconv is faster")
    return "\n".join(lines)


def _ms(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["case"] for r in results))
    impls = list(dict.fromkeys(r["impl"] for r in results if "median_s" in r))
    mine = {r["case"]: r["median_s"] for r in results if r["impl"] == "fastconv" and "median_s" in r}
    fig, ax = plt.subplots(figsize=(max(6, len(cases) * 0.9), 4))
    width = 0.8 / max(1, len(impls) - 1)
    for j, impl in enumerate(i for i in impls if i != "fastconv"):
        xs, ys = [], []
        for i, case in enumerate(cases):
            r = next((r for r in results if r["case"] == case and r["impl"] == impl
                      and "median_s" in r), None)
            if r and case in mine:
                xs.append(i + j * width)
                ys.append(r["median_s"] / mine[case])
        ax.bar(xs, ys, width, label=impl)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))])
    ax.set_xticklabels(cases, rotation=45, ha="right")
    ax.set_ylabel("peer time / fastconv time")
    ax.set_title(f"fastconv {fastconv.__version__} speedup (higher is better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(args):
    import argparse
    parser = argparse.ArgumentParser(prog="python -m fastconv bench",
                                     description="Time fastconv against its peers.")
    parser.add_argument("--cases", nargs="*", help="substrings of case names to run (the "
                        "frameworks cases, wrap_*, small_cnn_step, dask_*, and the whole "
                        "networks, models_*, only when named)")
    parser.add_argument("--peers", nargs="*", help=f"peers to run (default: all of {PEERS})")
    parser.add_argument("--algorithms", action="store_true",
                        help="time every forced algorithm instead of the peers (dispatcher data)")
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds per measurement")
    parser.add_argument("--threads", type=int, help="fastconv (and peer) thread count")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--plot", metavar="PNG", help="also plot the speedups to this file")
    parser.add_argument("--no-progress", action="store_true")
    opts = parser.parse_args(args)
    if opts.threads:
        fastconv.set_num_threads(opts.threads)
    fastconv.show_config()
    print()
    copy = [copy_bandwidth()]
    results = run(opts.cases, opts.peers, opts.min_time, not opts.no_progress, opts.algorithms)
    copy.append(copy_bandwidth())
    print(f"copy bandwidth ({fastconv.get_num_threads()} threads, 64 MiB, read + write): "
          f"{min(copy):.1f}-{max(copy):.1f} GB/s (before and after the cases); "
          f"'% of copy' is against {max(copy):.1f}")
    print(format_table(results, max(copy)))
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({"config": fastconv.config.config_info(), "copy_gbytes_per_s": copy,
                       "results": results}, f, indent=1)
    if opts.plot:
        plot(results, opts.plot)
        print(f"plot written to {opts.plot}")
    return 0
