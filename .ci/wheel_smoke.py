"""Smoke test of an installed fastconv wheel (run by .ci/wheel in a fresh virtual environment
with no C compiler on PATH): python wheel_smoke.py README.md {torch-first,fastconv-first}.

Runs the README's examples, and checks that PyTorch and fastconv share one OpenMP runtime in
the process whichever is imported first, and agree on a convolution."""
import re
import shutil
import sys

readme, order = sys.argv[1], sys.argv[2]
assert not any(shutil.which(cc) for cc in ("cc", "gcc", "clang")), "a C compiler is on PATH"
if order == "torch-first":
    import torch
    import fastconv
else:
    import fastconv
    import torch
import fastconv.torch as fnn
import numpy as np

assert "site-packages" in fastconv.__file__, fastconv.__file__   # the wheel, not a source tree
for block in re.findall(r"```python\n(.*?)```", open(readme).read(), re.S):
    try:
        exec(compile(block, readme, "exec"), {})
    except ModuleNotFoundError as missing:   # the jax and dask examples: not installed here
        assert missing.name.split(".")[0] in ("jax", "dask", "distributed"), missing

x = torch.randn(2, 8, 33, 35)
w = torch.randn(16, 8, 3, 3)
expected = torch.nn.functional.conv2d(x.double(), w.double(), padding=1, stride=2)
got = fnn.conv2d(x, w, padding=1, stride=2)
torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)
torch.set_num_threads(2)
fastconv.set_num_threads(2)
for _ in range(3):   # both thread pools busy in turn: one runtime serves both
    torch.nn.functional.conv2d(x, w, padding=1)
    fnn.conv2d(x, w, padding=1)

with open("/proc/self/maps") as maps:
    openmp = sorted({line.split()[-1] for line in maps if "libgomp" in line or "libiomp" in line})
assert len(openmp) == 1, f"more than one OpenMP runtime in the process: {openmp}"
owner = "torch" if "/torch/" in openmp[0] else "fastconv" if "/fastconv/" in openmp[0] else "?"
config = fastconv.config.config_info()
print(f"wheel smoke ({order}): OK; OpenMP runtime {openmp[0]} (from {owner}); "
      f"SIMD level {config['simd_level']} of {' '.join(config['simd_levels_built'])}")
