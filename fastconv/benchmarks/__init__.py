"""Benchmark cases as data, shared by pytest-benchmark (bench/) and ``python -m fastconv bench``.

A Case builds its inputs once and offers one zero-argument callable per implementation
(fastconv and its peers: NumPy, PyTorch, SciPy, OpenCV), so both runners time exactly the same
calls. A peer that is not installed raises PeerUnavailable and is skipped.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional


class PeerUnavailable(Exception):
    """This peer cannot run here (not installed, or does not support the case)."""


@dataclass
class Case:
    name: str
    family: str                                   # 'conv', 'pool', 'resample', 'backward', ...
    description: str
    make_inputs: Callable[[], dict]               # -> dict of NumPy arrays (built once)
    impls: Dict[str, Callable[[dict], Callable[[], object]]] = field(default_factory=dict)
    flops: Optional[Callable[[dict], float]] = None         # compute-bound cases: FLOP per call
    bytes_moved: Optional[Callable[[dict], float]] = None   # memory-bound: bytes read + written
    # overrides of the runner's burst/settle timing (runner.time_side_by_side), for cases whose
    # implementations share their thread pools and are best timed back to back
    timing: Dict[str, float] = field(default_factory=dict)

    def callable_for(self, impl, inputs):
        """A zero-argument callable running `impl` on `inputs` (raises PeerUnavailable)."""
        return self.impls[impl](inputs)


def all_cases():
    """Every benchmark case, grouped by family, in report order."""
    from fastconv.benchmarks import conv
    cases = list(conv.CASES)
    for module_name in ("pooling", "backward", "filters", "frameworks", "models"):
        try:
            module = __import__(f"fastconv.benchmarks.{module_name}", fromlist=["CASES"])
        except ImportError:
            continue
        cases += list(module.CASES)
    return cases


def require(module_name):
    """Import a peer's module or raise PeerUnavailable."""
    try:
        return __import__(module_name, fromlist=["_"])
    except ImportError as err:
        raise PeerUnavailable(f"{module_name} is not installed ({err})") from None


def torch_threads(torch, n):
    """PyTorch as a peer uses the same number of threads as fastconv."""
    torch.set_num_threads(n)
