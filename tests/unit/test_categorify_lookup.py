"""`Lookup`, the small-batch dict path of the serving transform's categorify, gives exactly
`encode`'s ids (the vectorised pandas lookup the compiled transform is proven against)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feature_store.categorify import Lookup, encode

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
    for n in (Lookup.SMALL, Lookup.SMALL + 1, 1000):
        values = pd.Series(rng.choice([f"v{i}" for i in range(80)] + [None], n), dtype=object)
        np.testing.assert_array_equal(Lookup(vocab)(values), encode(vocab, values))
