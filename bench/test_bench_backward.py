"""pytest-benchmark view of the training cases in fastconv/benchmarks/backward.py.

Run: python -m pytest bench/test_bench_backward.py --benchmark-enable
"""
import pytest

from fastconv.benchmarks import PeerUnavailable
from fastconv.benchmarks.backward import CASES

IMPLS = ("fastconv", "torch")
_inputs = {}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_backward(benchmark, case, impl):
    inputs = _inputs.setdefault(case.name, case.make_inputs())
    try:
        fn = case.callable_for(impl, inputs)
    except PeerUnavailable as why:
        pytest.skip(str(why))
    benchmark.group = case.name
    benchmark(fn)
