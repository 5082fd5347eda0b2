"""pytest-benchmark over the image filtering cases, fastconv.ndimage against SciPy and OpenCV
(the same callables as ``python -m fastconv bench``):
``python -m pytest bench/test_bench_filters.py --benchmark-enable``.
"""
import pytest

from fastconv.benchmarks import PeerUnavailable
from fastconv.benchmarks.filters import CASES

PAIRS = [pytest.param(case, impl, id=f"{case.name}-{impl}")
         for case in CASES for impl in case.impls]
_inputs = {}


@pytest.mark.parametrize("case,impl", PAIRS)
def test_bench(benchmark, case, impl):
    inputs = _inputs.setdefault(case.name, case.make_inputs())
    try:
        fn = case.callable_for(impl, inputs)
    except PeerUnavailable as why:
        pytest.skip(str(why))
    benchmark.group = case.name
    if case.bytes_moved:
        benchmark.extra_info["bytes_moved"] = case.bytes_moved(inputs)
    benchmark(fn)
