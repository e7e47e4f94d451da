"""The compiled kernel (``napari_calc._kernel``), imported once.

The core's functions read :data:`kernel` at each call instead of importing
the extension there: a function-level ``from .. import _kernel`` runs
importlib's Python code (the package's ``__spec__.parent``, the fromlist
check) every time, a few microseconds a call once the kernels have been
through the caches, 20 times a ``detect`` call.
``benchmarks/ab_kernel.py`` swaps builds by setting :data:`kernel`.
"""

try:
    from .. import _kernel as kernel
except ImportError:  # a source checkout without the built extension: the NumPy paths
    kernel = None
