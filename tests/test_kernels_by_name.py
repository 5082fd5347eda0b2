"""Every kernel, forced by name, against the float64 reference: each member of
fastconv.planning.Kernel is reachable through ``algorithm=`` and computes the right answer
(forward, input gradient and weight gradient, 1-3 d, strides, padding, dilation, groups,
both dtypes), and the plan names exactly the kernel that was forced."""
import numpy as np
import pytest

import fastconv
from fastconv import _core, grad, planning
from fastconv.planning import Kernel

import reference

CONV = {1: fastconv.conv1d, 2: fastconv.conv2d, 3: fastconv.conv3d}
INPUT = {1: grad.conv1d_input, 2: grad.conv2d_input, 3: grad.conv3d_input}
WEIGHT = {1: grad.conv1d_weight, 2: grad.conv2d_weight, 3: grad.conv3d_weight}

# nd, batch, c_in, c_out, size, kernel, stride, padding, dilation, groups
CASES = [
    (2, 3, 8, 12, (9, 10), 3, 1, 1, 1, 1),
    (2, 2, 6, 16, (11, 9), (3, 2), 2, (1, 0), 1, 2),
    (2, 2, 4, 8, (12, 12), 3, 1, 2, 2, 4),          # depthwise-like, dilated
    (2, 4, 16, 8, (7, 7), 1, 1, 0, 1, 1),           # 1x1: the GEMM-only kernels apply
    (1, 3, 5, 7, 23, 4, 3, 2, 1, 1),
    (3, 2, 4, 6, (5, 6, 7), 3, (2, 1, 1), 1, 1, 2),
    (2, 2, 6, 6, (11, 10), 3, 2, 1, 1, 6),          # depthwise, strided
    (1, 2, 3, 3, 20, 5, 3, 2, 2, 3),
]


def make(case, dtype):
    nd, batch, c_in, c_out, size, kernel, stride, padding, dilation, groups = case
    rng = np.random.default_rng(abs(hash(case)) % 2**32)
    size = (size,) * nd if isinstance(size, int) else size
    kernel = (kernel,) * nd if isinstance(kernel, int) else kernel
    x = rng.standard_normal((batch, c_in) + size).astype(dtype)
    w = rng.standard_normal((c_out, c_in // groups) + kernel).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    out_size = reference.conv_nd(x[:1], w, None, **kw).shape[2:]
    g = rng.standard_normal((batch, c_out) + out_size).astype(dtype)
    return nd, x, w, b, g, kw


def supported(operation, name, problem):
    try:
        return planning.supports(operation, name, problem)
    except KeyError:
        return True


TOLERANCE = {np.float32: 3e-4, np.float64: 1e-10}
ids = [f"{c[0]}d-k{c[5]}-s{c[6]}-g{c[9]}" for c in CASES]


def test_the_kernel_enum_is_the_compiled_one():
    assert {k.name: int(k) for k in Kernel} == _core.kernel_ids()
    for operation in ("forward", "input_grad", "weight_grad"):
        assert planning.variants(operation)   # every operation has named kernels


# operation: (its call with algorithm=name, its float64 reference, its planner, tolerance factor)
OPERATIONS = {
    "forward": (
        lambda nd, x, w, b, g, kw, name: CONV[nd](x, w, b, **kw, algorithm=name),
        lambda x, w, b, g, kw: reference.conv_nd(x.astype(np.float64), w, b, **kw),
        lambda problem, dtype, name: planning.plan_conv(problem, dtype, name), 1),
    "input_grad": (
        lambda nd, x, w, b, g, kw, name: INPUT[nd](x.shape, w, g, **kw, algorithm=name),
        lambda x, w, b, g, kw: reference.conv_input_grad(x.shape, w.astype(np.float64), g, **kw),
        lambda problem, dtype, name: planning.plan_input_grad(problem, dtype, name), 1),
    "weight_grad": (
        lambda nd, x, w, b, g, kw, name: WEIGHT[nd](x, w.shape, g, **kw, algorithm=name),
        lambda x, w, b, g, kw: reference.conv_weight_grad(x.astype(np.float64), w.shape, g,
                                                           **kw),
        lambda problem, dtype, name: planning.plan_weight_grad(problem, dtype, name),
        10),   # sums over the whole batch and plane
}
KERNELS = [pytest.param(operation, name, id=f"{operation}-{name}")
           for operation in OPERATIONS for name in sorted(planning.variants(operation))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=ids)
@pytest.mark.parametrize("operation, name", KERNELS)
def test_every_kernel_by_name(operation, name, case, dtype):
    call, expected, plan_of, factor = OPERATIONS[operation]
    nd, x, w, b, g, kw = make(case, dtype)
    if operation != "forward":
        b = None   # the gradients take no bias
    problem = planning.problem_from_call(x, w, b, **kw)
    if not supported(operation, name, problem):
        with pytest.raises(ValueError, match="algorithm="):
            call(nd, x, w, b, g, kw, name)
        return
    plan = plan_of(problem, dtype, name)
    assert plan.kernel == planning.variants(operation)[name] and plan.reason
    got = call(nd, x, w, b, g, kw, name)
    want = expected(x, w, b, g, kw)
    tol = TOLERANCE[dtype] * factor
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


def test_an_unknown_name_lists_every_name_that_works():
    x, w = np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))
    with pytest.raises(ValueError, match="'packed_phase'"):
        fastconv.conv2d(x, w, algorithm="winograd_f6")
    with pytest.raises(ValueError, match="'phase_scatter'"):
        grad.conv2d_input(x.shape, w, np.ones((1, 3, 3, 3)), algorithm="fft")
    with pytest.raises(ValueError, match="'gemm1x1_packed'"):
        grad.conv2d_weight(x, w.shape, np.ones((1, 3, 3, 3)), algorithm="fft")


def test_the_plan_explains_itself():
    plan = fastconv.choose_algorithm((8, 64, 28, 28), (64, 64, 3, 3), padding=1)
    text = plan.explain()
    assert plan.kernel.name in text and plan.reason in text and "threads" in text
