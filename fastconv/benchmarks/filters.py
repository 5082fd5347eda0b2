"""Image filtering benchmark cases (one float32 2048 x 2048 image): fastconv.ndimage against
scipy.ndimage and OpenCV, each with the same border ('reflect' is OpenCV's BORDER_REFLECT)."""
import numpy as np

import fastconv
from fastconv import ndimage
from fastconv.benchmarks import Case, require

SIZE = 2048


def _image():
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((SIZE, SIZE), dtype=np.float32),
            "w3": rng.standard_normal((3, 3), dtype=np.float32),
            "w7": rng.standard_normal((7, 7), dtype=np.float32)}


def _opencv():
    cv2 = require("cv2")
    cv2.setNumThreads(fastconv.get_num_threads())
    return cv2


def _gaussian_taps(sigma):
    return 2 * int(4.0 * sigma + 0.5) + 1     # SciPy's default truncate=4.0


def _correlate_case(k):
    key = f"w{k}"
    impls = {
        "fastconv": lambda inp: lambda: ndimage.correlate(inp["x"], inp[key]),
        "scipy": lambda inp: (lambda nd: lambda: nd.correlate(inp["x"], inp[key]))(
            require("scipy.ndimage")),
        "opencv": lambda inp: (lambda cv2: lambda: cv2.filter2D(
            inp["x"], -1, inp[key], borderType=cv2.BORDER_REFLECT))(_opencv()),
    }
    return Case(name=f"ndimage_correlate_{k}x{k}", family="filter",
                description=f"correlate, {SIZE}x{SIZE} float32, {k}x{k} weights, mode='reflect'",
                make_inputs=_image, impls=impls,
                flops=lambda inp: 2.0 * inp["x"].size * k * k)


def _gaussian_case(sigma):
    k = _gaussian_taps(sigma)
    impls = {
        "fastconv": lambda inp: lambda: ndimage.gaussian_filter(inp["x"], sigma),
        "scipy": lambda inp: (lambda nd: lambda: nd.gaussian_filter(inp["x"], sigma))(
            require("scipy.ndimage")),
        "opencv": lambda inp: (lambda cv2: lambda: cv2.GaussianBlur(
            inp["x"], (k, k), sigma, borderType=cv2.BORDER_REFLECT))(_opencv()),
    }
    return Case(name=f"gaussian_filter_sigma{sigma}", family="filter",
                description=f"gaussian_filter, {SIZE}x{SIZE} float32, sigma {sigma} "
                            f"({k} taps per axis), mode='reflect'",
                make_inputs=_image, impls=impls,
                flops=lambda inp: 2.0 * inp["x"].size * 2 * k)


def _uniform_case(size):
    impls = {
        "fastconv": lambda inp: lambda: ndimage.uniform_filter(inp["x"], size),
        "scipy": lambda inp: (lambda nd: lambda: nd.uniform_filter(inp["x"], size))(
            require("scipy.ndimage")),
        "opencv": lambda inp: (lambda cv2: lambda: cv2.blur(
            inp["x"], (size, size), borderType=cv2.BORDER_REFLECT))(_opencv()),
    }
    return Case(name=f"uniform_filter_{size}", family="filter",
                description=f"uniform_filter, {SIZE}x{SIZE} float32, size {size}, "
                            f"mode='reflect'",
                make_inputs=_image, impls=impls,
                bytes_moved=lambda inp: 2.0 * inp["x"].nbytes)


CASES = [_correlate_case(3), _correlate_case(7), _gaussian_case(2), _gaussian_case(5),
         _uniform_case(5)]
