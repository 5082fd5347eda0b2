"""Convolution cases: fastconv against NumPy, PyTorch, SciPy and OpenCV."""
import pytest

from fastconv.benchmarks import conv

from conftest import case_params, run_case

IMPLS = ("fastconv", "numpy", "torch", "scipy", "opencv")


@pytest.mark.parametrize("case, impl", case_params(conv.CASES, IMPLS))
def test_conv(benchmark, case, impl):
    run_case(benchmark, case, impl)
