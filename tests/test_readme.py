"""Every Python example in the README runs as written (documentation that cannot go stale)."""
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(index, capsys, monkeypatch):
    import fastconv._runtime.threads
    monkeypatch.setattr(fastconv._runtime.threads, "_requested", None)   # examples set thread counts
    try:
        exec(compile(BLOCKS[index], f"README.md (python block {index})", "exec"), {})
    except ModuleNotFoundError as missing:   # an optional framework's example (torch, jax, dask)
        if missing.name.split(".")[0] not in ("torch", "jax", "dask", "distributed"):
            raise
        pytest.skip(f"optional dependency {missing.name} is not installed")


def test_readme_has_examples():
    assert len(BLOCKS) >= 2
