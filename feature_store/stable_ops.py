"""Hashing and bucketing ops whose ids depend on the values only and declare their id domain.

Two NVTabular 23.08 behaviours are mended here: on CPU, `HashedCross` and `HashBucket` hash
the pandas *index* together with the value, so the same value lands in a different bucket on
every row; and hashed crosses and `Bucketize` declare no id domain, so their table size is not
in the fitted schema. These ops hash values only and declare their domain, so every
cardinality is read from the fitted schema. `feature_store.compiled` runs the same hashing on
the serving and transform path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from merlin.dag import ColumnSelector
from merlin.schema import Tags
from nvtabular import ops


def hash_rows(frame: Any) -> Any:
    """Row-wise hash of the values only, never the index (cuDF's hash already ignores it).
    Columns are combined in order, so (a, b) and (b, a) differ and a == b is not always 0,
    unlike the XOR of per-column hashes NVTabular uses."""
    if isinstance(frame, (pd.DataFrame, pd.Series)):
        return pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return frame.hash_values().values


def hash_columns(columns: list[Any]) -> np.ndarray:
    """`hash_rows` of a DataFrame of these columns (Series or arrays, in order), without building
    the frame: pandas' own per-column hashes combined the way `hash_pandas_object` combines them."""
    from pandas.core.util.hashing import combine_hash_arrays

    hashes = (_hash_values(c._values if isinstance(c, pd.Series) else np.asarray(c)) for c in columns)
    return combine_hash_arrays(hashes, len(columns))


SMALL_BATCH = 256  # hashing each string directly is faster up to ~500 of them (12 distinct values)


def _hash_values(values: np.ndarray) -> np.ndarray:
    """`pd.util.hash_array(values)`. pandas factorizes an object array first (faster with many
    repeats) and hashes the categories; a serving request of a few strings pays ~0.1 ms of
    factorize and index inference per column for it. Hashing each string directly gives the same
    hashes (the categories are the values themselves), so a small batch of strings only, with no
    null (a null's hash differs between the two paths), skips the factorize."""
    if values.dtype == object and len(values) <= SMALL_BATCH and all(type(v) is str for v in values):
        return pd.util.hash_array(values, categorize=False)
    return pd.util.hash_array(values)


def _emb_dim(cardinality: int) -> int:
    # NVTabular's rule of thumb, recorded only as a hint; the models choose their own size.
    return int(min(max(16, round(1.6 * cardinality**0.56)), 512))


def _domain(cardinality: int) -> dict[str, Any]:
    return {
        "domain": {"min": 0, "max": cardinality - 1},
        "embedding_sizes": {"cardinality": cardinality, "dimension": _emb_dim(cardinality)},
    }


class StableHashedCross(ops.HashedCross):
    """`HashedCross` of one column tuple whose ids depend on the values only.

    NVTabular 23.08 hashes with `pd.util.hash_pandas_object(index=True)` on CPU, so a cross
    id depends on the row's index. Also declares the id domain [0, num_buckets) and the
    categorical tag, so the table size is read from the fitted schema like any other.
    """

    def transform(self, col_selector: ColumnSelector, df: Any) -> Any:
        columns = list(col_selector.names)
        hashed = hash_rows(df[columns]) % np.uint64(self.num_buckets)
        out = type(df)(index=df.index)
        out["_X_".join(columns)] = hashed.astype(self.output_dtype)
        return out

    def _compute_properties(self, col_schema: Any, input_schema: Any) -> Any:
        # Replace, do not inherit, the inputs' properties (a bucketized input has its own domain).
        return col_schema.with_properties(_domain(int(self.num_buckets)))

    @property
    def output_tags(self) -> list[Tags]:
        return [Tags.CATEGORICAL]


class StableHashBucket(ops.HashBucket):
    """`HashBucket` whose ids depend on the values only (see `StableHashedCross`), with the
    domain [0, num_buckets) (23.08 declares max = num_buckets, one too many)."""

    def transform(self, col_selector: ColumnSelector, df: Any) -> Any:
        out = type(df)(index=df.index)
        for column in col_selector.names:
            hashed = hash_rows(df[column]) % np.uint64(self.num_buckets)
            out[column] = hashed.astype(self.output_dtype)
        return out

    def _compute_properties(self, col_schema: Any, input_schema: Any) -> Any:
        return col_schema.with_properties(_domain(int(self.num_buckets)))


class DomainBucketize(ops.Bucketize):
    """`Bucketize` that declares its id domain [0, len(boundaries)]."""

    def _compute_properties(self, col_schema: Any, input_schema: Any) -> Any:
        return col_schema.with_properties(_domain(len(self.boundaries(col_schema.name)) + 1))
