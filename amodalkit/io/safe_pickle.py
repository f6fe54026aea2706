"""Reading pickles that may only hold numpy arrays and plain containers, so a crafted file cannot run code.

A pickle names every class it rebuilds; :class:`ArraysOnlyUnpickler` resolves only the names in
:data:`ALLOWED` (numpy arrays, dtypes and scalars under both the numpy 1 ``numpy.core`` and the
numpy 2 ``numpy._core`` module names, builtin lists, dicts, tuples, sets, numbers, strings and
bytes, and ``_codecs.encode``, which protocol 2 pickles use to rebuild bytes) and refuses any
other, before anything is called.
"""

from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path

from amodalkit.errors import AmodalkitError

#: (module, name) pairs a pickle may name; numpy.core.* is looked up under numpy._core where it moved
ALLOWED = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "list"), ("builtins", "dict"), ("builtins", "tuple"), ("builtins", "set"),
    ("builtins", "int"), ("builtins", "float"), ("builtins", "str"), ("builtins", "bytes"),
    ("_codecs", "encode"),  # protocol 2 writes bytes (array data too) as _codecs.encode(text, "latin1")
})


def _resolve(module: str, name: str) -> object:
    if module.startswith("numpy.core."):
        try:
            return getattr(importlib.import_module("numpy._core." + module[len("numpy.core."):]), name)
        except ImportError:
            pass
    return getattr(importlib.import_module(module), name)


class ArraysOnlyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds only the classes and functions of :data:`ALLOWED`."""

    def find_class(self, module: str, name: str) -> object:
        module = "builtins" if module == "__builtin__" else module  # the name protocol 2 writes
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed (only numpy arrays, numbers, "
                                         "strings and plain containers are)")
        return _resolve(module, name)


def load_arrays_pickle(path: str | Path, what: str = "pickle") -> object:
    """Unpickle `path` allowing only numpy arrays and plain containers; AmodalkitError naming it otherwise."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise AmodalkitError(f"not a readable {what} ({exc.strerror or exc})", path) from exc
    try:
        return ArraysOnlyUnpickler(io.BytesIO(data)).load()
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, OverflowError, UnicodeDecodeError, ImportError) as exc:
        raise AmodalkitError(f"not a readable {what} ({exc})", path) from exc
