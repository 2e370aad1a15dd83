"""`FastCategorify`: NVTabular's `Categorify` ids, fitted and applied with vectorised pandas.

NVTabular 23.08's `Categorify` is slow on CPU (NVTabular issue 1289): its fit runs a
multi-level groupby per column and its transform a merge plus a sort per column per batch.
This op gives exactly the same ids with one `value_counts` per column per partition at fit
and one hash lookup (`Index.get_indexer`) per column at transform:

  * 0 padding, 1 null, 2 out-of-vocabulary (values seen fewer than `freq_threshold` times,
    or never seen), real values from 3 on;
  * the vocabulary ordered like NVTabular's: sorted by value, then by count descending with
    the same (unstable) pandas sort, so ties land exactly where Categorify puts them;
  * written in NVTabular's layout, `<out_path>/categories/unique.<col>.parquet` (values and
    `<col>_size`, index = id) plus `meta.<col>.parquet`, so `Workflow.save`/`load`, warm
    starts and `ops.get_embedding_sizes` read it like Categorify's.

The vocabulary is also kept in memory (and pickled with the workflow), so Dask workers on
other hosts transform without reading the fit host's files. Unlike Categorify it places
nulls by position, not index label, and accepts a batch whose column is all null.
"""

from __future__ import annotations

import os
from typing import Any

import dask
import numpy as np
import pandas as pd
from merlin.dag import ColumnSelector
from merlin.dag.ops.stat_operator import StatOperator
from merlin.schema import Tags
from nvtabular.ops.categorify import _copy_storage, _emb_sz_rule

PAD_ID, NULL_ID, OOV_ID = 0, 1, 2
FIRST_ID = 3
STAT_NAME = "categories"  # NVTabular's sub-directory for Categorify vocabularies
_TREE_WIDTH = 8  # partitions merged per reduction task at fit


def _size_name(column: str) -> str:
    return f"{column}_size"


def _partition_counts(df: pd.DataFrame, columns: list[str]) -> dict[str, tuple[pd.Series, int]]:
    """Per column: counts of the non-null values, and the number of nulls."""
    out = {}
    for column in columns:
        ser = df[column]
        counts = ser.value_counts(dropna=True, sort=False)
        if isinstance(ser.dtype, pd.CategoricalDtype):  # a dictionary-encoded read: counts of the codes
            counts = counts[counts > 0]
            counts.index = pd.Index(counts.index.to_numpy(object), dtype=object)
        out[column] = (counts, int(len(ser) - counts.sum()))
    return out


def _merge_counts(parts: list[dict[str, tuple[pd.Series, int]]]) -> dict[str, tuple[pd.Series, int]]:
    merged = {}
    for column in parts[0]:
        series = [p[column][0] for p in parts if len(p[column][0])]
        nulls = sum(p[column][1] for p in parts)
        if not series:
            counts = parts[0][column][0]
        elif len(series) == 1:
            counts = series[0]
        else:  # int64 and float64 parts of one column merge here (5 and 5.0 are one value)
            counts = pd.concat(series).groupby(level=0, sort=False).sum()
        merged[column] = (counts.astype(np.int64), nulls)
    return merged


def fit_counts(ddf: Any, columns: list[str]) -> Any:
    """A Delayed of {column: (value counts, null count)} over every partition (a tree merge)."""
    layer = [dask.delayed(_partition_counts)(p, columns) for p in ddf[columns].to_delayed()]
    while len(layer) > 1:
        layer = [
            dask.delayed(_merge_counts)(layer[i : i + _TREE_WIDTH])
            for i in range(0, len(layer), _TREE_WIDTH)
        ]
    return dask.delayed(_merge_counts)(layer)


def vocabulary_frame(column: str, counts: pd.Series, freq_threshold: int) -> pd.DataFrame:
    """The unique-value table NVTabular writes for one column: index = id (from 3), the value
    and its count; ordered as `nvtabular.ops.categorify._write_uniques` orders it."""
    size = _size_name(column)
    frame = pd.DataFrame({column: counts.index.to_numpy(), size: counts.to_numpy(np.int64)})
    if len(frame) == 0:
        # Categorify writes one null row for an empty vocabulary (it counts as one id).
        frame = pd.DataFrame({column: pd.Series([None], dtype=counts.index.dtype), size: [0]})
        frame.index = pd.RangeIndex(FIRST_ID, FIRST_ID + 1)
        return frame
    # The same two sorts as Categorify: by value, then by count with the default (unstable)
    # quicksort, which reorders ties deterministically given the same input order.
    frame = frame.sort_values(column, na_position="first", ignore_index=True)
    frame = frame.sort_values(size, ascending=False, ignore_index=True)
    if freq_threshold:
        sizes = frame[size]
        frame = frame[(sizes >= freq_threshold) | (sizes == 0)]
    frame.index = pd.RangeIndex(FIRST_ID, FIRST_ID + len(frame))
    return frame


def _write_vocabulary(frame: pd.DataFrame, base: str, column: str, nulls: int, oov: int) -> str:
    os.makedirs(base, exist_ok=True)
    path = os.path.join(base, f"unique.{column}.parquet")
    frame.to_parquet(path, compression=None)
    kept = 0 if frame[column].isna().all() else len(frame)
    meta = pd.DataFrame(
        {
            "kind": ["pad", "null", "oov", "unique"],
            "offset": [PAD_ID, NULL_ID, OOV_ID, FIRST_ID],
            "num_indices": [1, 1, 1, kept],
            "num_observed": [0, nulls, oov, int(frame[_size_name(column)].sum())],
        }
    )
    meta.to_parquet(os.path.join(base, f"meta.{column}.parquet"))
    return path


class FastCategorify(StatOperator):
    """Categorify's ids (see the module docstring) for one or more columns in one pass.

    Args:
        freq_threshold: values seen fewer times map to the OOV id; an int for every column or
            a dict per column (0 or 1: keep every value).
        out_path: the directory whose `categories/` receives the vocabularies at fit.
    """

    def __init__(self, freq_threshold: int | dict[str, int] = 0, out_path: str | None = None):
        super().__init__()
        self.freq_threshold = freq_threshold
        self.out_path = out_path or "./"
        self.categories: dict[str, str] = {}  # column -> unique.<col>.parquet (NVTabular's name)
        self.vocabs: dict[str, pd.Index] = {}  # column -> values in id order (id = 3 + position)

    def _threshold(self, column: str) -> int:
        value = self.freq_threshold
        value = value.get(column, 0) if isinstance(value, dict) else value
        return int(value) if value and value > 1 else 0

    # ------------------------------------------------------------------ fit
    def fit(self, col_selector: ColumnSelector, ddf: Any) -> Any:
        return fit_counts(ddf, list(col_selector.names))

    def partition_stats(self, df: pd.DataFrame, columns: list[str]) -> dict[str, tuple[pd.Series, int]]:
        return _partition_counts(df, columns)

    @staticmethod
    def merge_stats(parts: list[dict[str, tuple[pd.Series, int]]]) -> dict[str, tuple[pd.Series, int]]:
        return _merge_counts(parts)

    def fit_finalize(self, dask_stats: dict[str, tuple[pd.Series, int]]) -> None:
        base = os.path.join(str(self.out_path), STAT_NAME)
        for column, (counts, nulls) in dask_stats.items():
            threshold = self._threshold(column)
            frame = vocabulary_frame(column, counts, threshold)
            oov = int(counts[counts < threshold].sum()) if threshold else 0
            self.categories[column] = _write_vocabulary(frame, base, column, nulls, oov)
            values = frame[column]
            self.vocabs[column] = _warm(pd.Index(values.dropna() if values.isna().all() else values))

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for vocab in self.vocabs.values():  # unpickled on a worker whose threads share it
            _warm(vocab)

    def clear(self) -> None:
        self.categories, self.vocabs = {}, {}

    def set_storage_path(self, new_path: str, copy: bool = False) -> None:
        self.categories = _copy_storage(self.categories, self.out_path, new_path, copy=copy)
        self.out_path = new_path

    # ------------------------------------------------------------ transform
    def transform(self, col_selector: ColumnSelector, df: Any) -> Any:
        out = df.copy(deep=False)
        for column in col_selector.names:
            out[column] = encode(self.vocabs[column], df[column])
        return out

    # --------------------------------------------------------------- schema
    def cardinality(self, column: str) -> int:
        # Categorify's count: pad + null + oov + the rows of the unique file (one for empty).
        return FIRST_ID + max(len(self.vocabs.get(column, ())), 1)

    def _compute_properties(self, col_schema: Any, input_schema: Any) -> Any:
        new_schema = super()._compute_properties(col_schema, input_schema)
        name = col_schema.name
        cardinality, dimension = _emb_sz_rule(self.cardinality(name))
        extra = {
            "num_buckets": None,
            "freq_threshold": self._threshold(name),
            "max_size": 0,
            "cat_path": self.categories.get(name),
            "domain": {"min": 0, "max": cardinality - 1, "name": name},
            "embedding_sizes": {"cardinality": cardinality, "dimension": dimension},
        }
        return col_schema.with_properties({**new_schema.properties, **extra})

    @property
    def output_tags(self) -> list[Tags]:
        return [Tags.CATEGORICAL]

    @property
    def output_dtype(self) -> Any:
        return np.int64


def _warm(vocab: pd.Index) -> pd.Index:
    """Build the index's hash table now. pandas builds it lazily on the first lookup and that
    is not thread-safe: two Dask threads looking up a fresh vocabulary at once can see it
    half-built ("Reindexing only valid with uniquely valued Index objects")."""
    if len(vocab):
        assert vocab.is_unique
        vocab.get_indexer(vocab[:1])
    return vocab


class Lookup:
    """`encode` for one vocabulary, faster on small batches (serving requests).

    `Index.get_indexer` spends ~50-100 us of Python per call before its hash lookup (it builds an
    Index of the values and infers its dtype): most of a one-row request's categorify cost. A
    batch of at most `SMALL` values is looked up in a dict instead (faster up to ~2,000 values,
    measured with a 5,000-value vocabulary), with the same result: both
    compare by Python hash and ==, and the dict is built only for a vocabulary without nulls (the
    one case where pandas matches values the dict would not: NaN to NaN). Anything else (larger
    batches, categoricals, mixed int/float kinds, unhashable values) goes to `encode`."""

    SMALL = 1024  # a serving request of 1,000 rows still takes the dict

    def __init__(self, vocab: pd.Index):
        self.vocab = vocab
        plain = vocab.dtype.kind in "iuO" and not vocab.hasnans
        self.ids = {v: i for i, v in enumerate(vocab.tolist(), FIRST_ID)} if plain else None

    def __call__(self, values: pd.Series) -> np.ndarray:
        if (self.ids is None or len(values) > self.SMALL or isinstance(values.dtype, pd.CategoricalDtype)
                or (values.dtype.kind == "O") != (self.vocab.dtype.kind == "O")):
            return encode(self.vocab, values)
        get = self.ids.get
        try:
            ids = np.array([get(v, -1) for v in values.tolist()], dtype=np.int64)
        except TypeError:  # an unhashable value: let pandas say what it makes of it
            return encode(self.vocab, values)
        absent = np.flatnonzero(ids < 0)
        if len(absent):  # pd.isna on the array: Series.isna's test without building a Series
            ids[absent] = np.where(pd.isna(values.to_numpy()[absent]), NULL_ID, OOV_ID)
        return ids


def encode(vocab: pd.Index, values: pd.Series) -> np.ndarray:
    """Ids for `values`: 3 + position in `vocab`, 2 when absent, 1 for null (by position)."""
    if isinstance(values.dtype, pd.CategoricalDtype):  # look up each category once, then take
        ids = encode(vocab, pd.Series(values.cat.categories.to_numpy(object), dtype=object))
        codes = values.cat.codes.to_numpy()
        return np.where(codes >= 0, ids[codes] if len(ids) else OOV_ID, NULL_ID).astype(np.int64)
    if len(vocab) and vocab.dtype.kind in "iu" and values.dtype.kind == "f":
        # An int vocabulary meets a float batch (nulls in an int column): look up as floats.
        vocab = pd.Index(vocab.to_numpy(np.float64))
    ids = vocab.get_indexer(values) if len(vocab) else np.full(len(values), -1, np.intp)
    absent = np.flatnonzero(ids < 0)  # null or out-of-vocabulary: tell them apart only here
    ids = ids.astype(np.int64) + FIRST_ID
    if len(absent):
        ids[absent] = np.where(values.iloc[absent].isna().to_numpy(), NULL_ID, OOV_ID)
    return ids
