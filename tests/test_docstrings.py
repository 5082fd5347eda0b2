"""Every example in a public docstring runs and prints what it shows."""
import doctest
import importlib
import pkgutil

import pytest

import fastconv

MODULES = sorted(
    name for _, name, _ in pkgutil.walk_packages(fastconv.__path__, "fastconv.")
    # optional framework bridges import their framework; __main__ runs the command line
    if name.rsplit(".", 1)[-1] not in ("__main__", "torch", "jax", "dask"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
