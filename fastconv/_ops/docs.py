"""Shared docstrings: one template per operator, filled in per dimensionality.

The per-dimension public functions (``conv1d``, ``conv2d``, ``conv3d``, ...) are one-liners;
``@document(TEMPLATE, nd=2, example=...)`` gives each its docstring, so an argument is
described once and means the same thing in every dimensionality (as SciPy's ``docfiller``).
"""

# The names of the spatial axes, of the kernel's and of the output's, per dimensionality.
DIMS = {1: "L", 2: "H, W", 3: "D, H, W"}
KERNEL_DIMS = {1: "kL", 2: "kH, kW", 3: "kD, kH, kW"}
OUT_DIMS = {1: "L_out", 2: "H_out, W_out", 3: "D_out, H_out, W_out"}


def document(template, nd=None, **fields):
    """Decorator: the function's docstring is `template` formatted with `fields`, and, for a
    dimensionality `nd`, with nd, n (= nd + 2), dims, kdims and odims."""
    if nd is not None:
        fields = dict(nd=nd, n=nd + 2, dims=DIMS[nd], kdims=KERNEL_DIMS[nd], odims=OUT_DIMS[nd],
                      **fields)

    def decorate(fn):
        fn.__doc__ = template.format(**fields)
        return fn
    return decorate
