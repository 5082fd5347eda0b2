"""fastconv: fast CPU convolution, pooling and resampling on NumPy arrays.

Operators follow PyTorch's semantics and argument names; hot loops are Cython kernels,
parallel with OpenMP, over float32 and float64.
"""
from fastconv._version import __version__
from fastconv._runtime.cpu import simd_level as _simd_level

_simd_level()   # the kernels' SIMD level, before any compiled module loads: ImportError, not SIGILL

from fastconv._runtime import threads as _threads  # noqa: E402
from fastconv._runtime.threads import get_num_threads, num_threads, set_num_threads  # noqa: E402
from fastconv._runtime.precision import (  # noqa: E402
    denormals, get_denormals, get_precision, precision, set_denormals, set_precision,
)
from fastconv._runtime.autotune import (  # noqa: E402
    autotune, forget_autotuned, get_autotune, set_autotune,
)
from fastconv._runtime.memory import (  # noqa: E402
    empty_memory_pool, get_memory_pool, memory_pool_info, set_memory_pool,
)
from fastconv.config import show_config  # noqa: E402
from fastconv.planning import (  # noqa: E402
    ReceptiveField, choose_algorithm, output_shape, receptive_field,
)
from fastconv._ops.conv import conv1d, conv2d, conv3d  # noqa: E402
from fastconv._ops.signal import convolve, correlate  # noqa: E402
from fastconv._ops.conv_transpose import (  # noqa: E402
    conv_transpose1d, conv_transpose2d, conv_transpose3d,
)
from fastconv._ops.locally_connected import locally_connected1d, locally_connected2d  # noqa: E402
from fastconv._ops.pooling import (  # noqa: E402
    adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_avg_pool3d, adaptive_max_pool1d,
    adaptive_max_pool2d, adaptive_max_pool3d, avg_pool1d, avg_pool2d, avg_pool3d, max_pool1d,
    max_pool2d, max_pool3d, max_unpool1d, max_unpool2d, max_unpool3d,
)
from fastconv._ops.interpolate import interpolate  # noqa: E402
from fastconv import grad, planning  # noqa: E402,F401

_threads.register_blas_hook()

__all__ = [
    "__version__", "show_config", "set_num_threads", "get_num_threads", "num_threads",
    "set_precision", "get_precision", "precision", "set_denormals", "get_denormals", "denormals",
    "set_autotune", "get_autotune", "autotune", "forget_autotuned",
    "set_memory_pool", "get_memory_pool", "empty_memory_pool", "memory_pool_info",
    "conv1d", "conv2d", "conv3d", "convolve", "correlate", "output_shape", "receptive_field",
    "ReceptiveField", "choose_algorithm",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "locally_connected1d", "locally_connected2d",
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "max_unpool1d", "max_unpool2d", "max_unpool3d", "interpolate",
]
