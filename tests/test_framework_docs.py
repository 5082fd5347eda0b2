"""The examples in the docstrings of fastconv.torch, fastconv.jax and fastconv.dask run and
print what they say."""
import doctest
import importlib

import pytest


@pytest.mark.parametrize("module_name, extra", [
    ("fastconv.torch", "torch"), ("fastconv.jax", "jax"), ("fastconv.dask", "dask.array")])
def test_docstring_examples(module_name, extra):
    pytest.importorskip(extra)
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
