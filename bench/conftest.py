"""pytest-benchmark over the cases in fastconv.benchmarks (the same data as
``python -m fastconv bench``): one benchmark per (case, implementation), grouped by case so
the table shows fastconv and its peers side by side."""
import pytest

import fastconv
from fastconv.benchmarks import PeerUnavailable

_INPUTS = {}


def inputs_for(case):
    """Build each case's arrays once per session."""
    if case.name not in _INPUTS:
        _INPUTS[case.name] = case.make_inputs()
    return _INPUTS[case.name]


def run_case(benchmark, case, impl):
    try:
        fn = case.callable_for(impl, inputs_for(case))
    except PeerUnavailable as why:
        pytest.skip(f"{impl}: {why}")
    benchmark.group = f"{case.name}: {case.description}"
    benchmark.extra_info["threads"] = fastconv.get_num_threads()
    if case.flops:
        benchmark.extra_info["gflop"] = case.flops(inputs_for(case)) / 1e9
    benchmark(fn)


def case_params(cases, impls):
    """pytest params for every (case, implementation) pair, with readable ids."""
    return [pytest.param(case, impl, id=f"{case.name}-{impl}")
            for case in cases for impl in impls if impl in case.impls]
