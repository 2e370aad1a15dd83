"""The serving transform's small-batch paths give exactly what the vectorised pandas paths give
(the ones the compiled transform is proven against): `Lookup` (a dict) vs `encode`
(`Index.get_indexer`), and the cross hash of a few strings without pandas' factorize."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feature_store.categorify import Lookup, encode
from feature_store.stable_ops import SMALL_BATCH, hash_columns

VOCABS = {
    "strings": pd.Index(["a", "b", "c", "7", ""], dtype=object),
    "ints": pd.Index([5, 3, 17, 0, -2], dtype=np.int64),
    "uints": pd.Index([5, 3, 17], dtype=np.uint64),
    "strings with a null": pd.Index(["a", None, "b"], dtype=object),
    "floats": pd.Index([1.5, 2.0]),
    "empty": pd.Index([], dtype=object),
}
BATCHES = [
    pd.Series(["a", "zz", None, "7", "", np.nan, "c"], dtype=object),
    pd.Series([3, 4, -2, 0, 17], dtype=np.int64),
    pd.Series([3.0, np.nan, 17.0, 2.5]),
    pd.Series([5, 3, 99], dtype=np.uint64),
    pd.Series(["b", None, "q"], dtype="category"),
    pd.Series([None, None], dtype=object),
    pd.Series([], dtype=object),
    pd.Series([3, "a", 5.0, True], dtype=object),
]


@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize("batch", range(len(BATCHES)))
def test_lookup_equals_encode(vocab, batch):
    values = BATCHES[batch]
    got = Lookup(VOCABS[vocab])(values)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, encode(VOCABS[vocab], values))


def test_large_batches_take_the_vectorised_path():
    rng = np.random.default_rng(0)
    vocab = pd.Index([f"v{i}" for i in range(50)], dtype=object)
    for n in (Lookup.SMALL, Lookup.SMALL + 1, 3000):
        values = pd.Series(rng.choice([f"v{i}" for i in range(80)] + [None], n), dtype=object)
        np.testing.assert_array_equal(Lookup(vocab)(values), encode(vocab, values))


@pytest.mark.parametrize("n", [1, 2, SMALL_BATCH, SMALL_BATCH + 1])
def test_small_batch_cross_hash_equals_pandas(n):
    from pandas.core.util.hashing import combine_hash_arrays

    rng = np.random.default_rng(n)
    pool = ["seg1", "seg2", "", "é", "cat 7", "3", "None"]
    strings = pd.Series(rng.choice(pool, n), dtype=object)
    with_null = strings.copy()
    with_null.iloc[0] = None
    numbers = rng.integers(-5, 30, n)
    for columns in ([strings, numbers], [strings, strings[::-1].reset_index(drop=True)], [with_null, numbers],
                    [pd.Series(rng.choice([1, "a"], n), dtype=object), numbers]):
        reference = combine_hash_arrays(
            (pd.util.hash_array(c._values if isinstance(c, pd.Series) else c) for c in columns), len(columns))
        np.testing.assert_array_equal(hash_columns(columns), reference)
