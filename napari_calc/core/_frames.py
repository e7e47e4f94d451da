"""The public tables built from NumPy arrays, fast.

``pd.DataFrame(dict_of_arrays)`` infers and checks every column (and, with
pandas 3, turns an object array of strings into its string dtype), then
gathers the columns of each dtype into one block. :func:`frame_of_arrays`
makes the same frame from arrays whose dtypes are already the table's:

- with pandas 3, by gathering the blocks itself and handing them to
  ``pandas.api.internals.create_dataframe_from_blocks`` (pandas' public
  low-level constructor, which takes blocks as they are): 15-25 µs for
  ``detect``'s calcification table, against about 100 µs through
  ``DataFrame._from_arrays`` and more through the public constructor;
- else through ``DataFrame._from_arrays`` (not public API, so used
  guardedly), or the public constructor.

A test checks that every path gives the public constructor's frame.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

try:
    from pandas.api.internals import create_dataframe_from_blocks as _from_blocks
except ImportError:  # pandas 2
    _from_blocks = None

__all__ = ["frame_of_arrays"]

#: The column Index of each column-name tuple seen (an Index takes about
#: 20 µs to make from strings; a view of a made one under 1 µs). Each
#: frame gets its own view, so renaming one frame's columns touches no
#: other.
_COLUMN_INDEX: dict[tuple, pd.Index] = {}

#: The dtypes that go into a NumPy block as they are (bool, integers,
#: floats, complex, object); others (datetimes, fixed-width strings) go
#: to the public constructor, which converts them.
_BLOCK_KINDS = "biufcO"


def _column_index(names: tuple) -> pd.Index:
    idx = _COLUMN_INDEX.get(names)
    if idx is None:
        if len(_COLUMN_INDEX) >= 64:
            _COLUMN_INDEX.clear()
        idx = _COLUMN_INDEX[names] = pd.Index(list(names))
    return idx.view()


def frame_of_arrays(columns: dict) -> pd.DataFrame:
    """``pd.DataFrame`` of ``columns`` (name -> 1-D NumPy array, all of one
    length), in the dict's order, with a RangeIndex and each column of its
    array's dtype (an object array stays object). The frame owns its data
    with pandas 3 (each block a fresh array); with pandas 2 it may hold an
    array itself: pass arrays nothing else will write to."""
    arrays = [np.asarray(v) for v in columns.values()]
    n = len(arrays[0]) if arrays else 0
    if all(a.ndim == 1 and len(a) == n and a.dtype.kind in _BLOCK_KINDS for a in arrays):
        if _from_blocks is not None:
            groups: dict = {}
            for j, a in enumerate(arrays):
                groups.setdefault(a.dtype, []).append(j)
            blocks = [(np.stack([arrays[j] for j in at]), np.array(at, dtype=np.intp)) for at in groups.values()]
            return _from_blocks(blocks, index=pd.RangeIndex(n), columns=_column_index(tuple(columns)))
        make = getattr(pd.DataFrame, "_from_arrays", None)
        if make is not None:
            try:
                return make(arrays, columns=pd.Index(list(columns)), index=pd.RangeIndex(n),
                            verify_integrity=False)
            except (TypeError, ValueError):  # another pandas: the public constructor
                pass
    return pd.DataFrame({k: pd.Series(a, dtype=object) if a.dtype == object else a
                         for k, a in zip(columns, arrays)})
