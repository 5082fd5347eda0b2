"""scipy.ndimage's linear filters, computed by fastconv: ``from fastconv import ndimage`` in
place of ``from scipy import ndimage`` for ``correlate``, ``convolve``, ``correlate1d``,
``convolve1d``, ``uniform_filter``, ``uniform_filter1d``, ``gaussian_filter`` and
``gaussian_filter1d``, with SciPy's signatures, border modes and results."""
from fastconv._ops.ndimage import (  # noqa: F401
    __all__, convolve, convolve1d, correlate, correlate1d, gaussian_filter, gaussian_filter1d,
    uniform_filter, uniform_filter1d,
)
