"""Pickles without arbitrary code: only plain Python data and numpy arrays may be loaded.

`pickle.loads` of a stranger's file runs whatever the file names; content-addressed files come
from strangers. The restricted unpickler resolves only the globals listed here, under both numpy 1
(`numpy.core`) and numpy 2 (`numpy._core`) module paths, so old pickles load under numpy 2.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from .errors import UsageError

_ALLOWED: dict[str, set[str]] = {
    "builtins": {"set", "frozenset", "complex", "slice", "range", "bytearray", "list", "dict", "tuple"},
    "collections": {"OrderedDict", "defaultdict", "deque"},
    "datetime": {"datetime", "date", "time", "timedelta", "timezone"},
    "numpy": {"ndarray", "dtype"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "numpy.core.numeric": {"_frombuffer"},
    "numpy._core.numeric": {"_frombuffer"},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if name in _ALLOWED.get(module, ()):
            if module.startswith("numpy.core"):
                module = _numpy_core_module(module)
            return super().find_class(module, name)
        raise UsageError(f"refusing to unpickle {module}.{name}: only plain data and numpy arrays are allowed")


def _numpy_core_module(module: str) -> str:
    import numpy as np
    return module.replace("numpy.core", "numpy._core") if int(np.__version__.split(".")[0]) >= 2 else module


def dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=4)


def loads(data: bytes) -> Any:
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError) as e:
        raise UsageError(f"not a loadable pickle: {e}") from None
