"""The modules of fastconv 0.1's flat layout (fastconv.dispatch, fastconv.pooling, ...) stay
importable as aliases of the names' new homes, with a DeprecationWarning."""
import warnings


def warn_moved(module, new_home):
    """Warn that `module` is an alias kept for code written against fastconv 0.1."""
    warnings.warn(f"{module} is deprecated: import these names from {new_home} "
                  f"(the package is layered since 0.2, see ARCHITECTURE.md)", DeprecationWarning,
                  stacklevel=3)
