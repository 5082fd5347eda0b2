"""Whole networks (forward, and a training step) through fastconv.torch against torch.nn: the
cases of ``python -m fastconv bench --cases models``. Minutes in all, so only with
FASTCONV_BENCH_MODELS=1: ``FASTCONV_BENCH_MODELS=1 python -m pytest bench/test_bench_models.py``."""
import os

import pytest

from conftest import case_params, run_case

if os.environ.get("FASTCONV_BENCH_MODELS") != "1":
    pytest.skip("whole networks: set FASTCONV_BENCH_MODELS=1", allow_module_level=True)
models = pytest.importorskip("fastconv.benchmarks.models")   # needs PyTorch

IMPLS = ("fastconv", "torch")


@pytest.mark.parametrize("case, impl", case_params(models.CASES, IMPLS))
def test_model(benchmark, case, impl):
    run_case(benchmark, case, impl)
