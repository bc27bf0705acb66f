"""BLAS's saxpy (y += a·x on float32, in place), callable from several threads at once.

scipy.linalg.blas.saxpy holds the GIL for the whole call, so threads folding disjoint parts
of a shard would only take turns. scipy also exports its BLAS routines as C function pointers,
for Cython (scipy.linalg.cython_blas); called through ctypes, which releases the GIL around a
foreign call, the same routine runs in every thread at once. (Numba reaches scipy's BLAS the
same way.) The routine is Fortran's: every argument by pointer, 32-bit lengths.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.linalg import cython_blas

_INT = ctypes.POINTER(ctypes.c_int)
_FLOAT = ctypes.POINTER(ctypes.c_float)
_SAXPY_TYPE = ctypes.CFUNCTYPE(None, _INT, _FLOAT, ctypes.c_void_p, _INT, ctypes.c_void_p, _INT)
MAX_LENGTH = 2**31 - 1


def _routine(name: str) -> Any:
    capsule = cython_blas.__pyx_capi__[name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return _SAXPY_TYPE(get_pointer(capsule, get_name(capsule)))


_saxpy = _routine("saxpy")
_ONE = ctypes.byref(ctypes.c_int(1))


def scalar(a: float) -> Any:
    """`a` as axpy takes it; make it once per weight, not once per call."""
    return ctypes.byref(ctypes.c_float(a))


def axpy(x: NDArray[Any], y: NDArray[np.float32], a: Any) -> None:
    """y += a * x, unchecked (the fold's inner loop): x and y contiguous float32 of one length
    below 2^31, y writable, `a` from scalar()."""
    _saxpy(ctypes.byref(ctypes.c_int(len(y))), a, x.ctypes.data, _ONE, y.ctypes.data, _ONE)


def saxpy(x: NDArray[Any], y: NDArray[np.float32], a: float) -> None:
    """y += a * x, for contiguous float32 vectors of one length; y is written in place."""
    if x.dtype != np.float32 or y.dtype != np.float32:
        raise TypeError(f"saxpy needs float32 vectors, got {x.dtype} and {y.dtype}")
    if x.ndim != 1 or x.shape != y.shape or len(y) > MAX_LENGTH:
        raise ValueError(f"saxpy needs two vectors of one length below 2^31: {x.shape}, {y.shape}")
    if not (x.flags.c_contiguous and y.flags.c_contiguous and y.flags.writeable):
        raise ValueError("saxpy needs contiguous vectors and a writable y")
    axpy(x, y, scalar(a))
