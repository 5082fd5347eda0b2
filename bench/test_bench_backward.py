"""Training cases (convolution gradients, transposed convolution): fastconv against PyTorch."""
import pytest

from fastconv.benchmarks import backward

from conftest import case_params, run_case

IMPLS = ("fastconv", "torch")


@pytest.mark.parametrize("case, impl", case_params(backward.CASES, IMPLS))
def test_backward(benchmark, case, impl):
    run_case(benchmark, case, impl)
