"""Item text as term weights: TF-IDF over title words and tags, for content retrieval.

    w(t, i) = tf(t, i) * (ln((1 + n) / (1 + df(t))) + 1),  each item's row L2-normalized

(scikit-learn's `TfidfVectorizer` with smooth idf). Tags are whole tokens prefixed with "#"
(a genre "Sci-Fi" is one term "#sci-fi", never split into words), so a title word and a tag
with the same spelling stay different terms. The result is a plain CSR (no torch here):
`models.retrieval` wraps it in an `Interactions` for `SideInfo.item_terms`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

WORD = re.compile(r"(?u)\b[^\W\d_][\w']+\b")  # words of two or more characters, not numbers (years)


@dataclass(frozen=True)
class TermMatrix:
    """Items x terms, CSR: row i's terms `indices[indptr[i]:indptr[i+1]]` with weights `data`."""

    indptr: np.ndarray  # int64 (n_items + 1,)
    indices: np.ndarray  # int64 (nnz,), sorted within a row
    data: np.ndarray  # float32 (nnz,)
    vocabulary: list[str]  # term of each column


def item_term_matrix(texts: list[str], tags: list[list[str]] | None = None, min_df: int = 1) -> TermMatrix:
    """TF-IDF of each item's text words plus its tags (one list per item, or None).
    `min_df`: drop terms in fewer items (a term in a single item links it to nothing)."""
    if tags is not None and len(tags) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(tags)} tag lists")
    docs = [WORD.findall(t.lower()) + ["#" + g.strip().lower() for g in (tags[n] if tags else []) if g.strip()]
            for n, t in enumerate(texts)]
    vectorizer = TfidfVectorizer(analyzer=lambda doc: doc, min_df=min_df, stop_words=None)
    m = vectorizer.fit_transform(docs).tocsr()
    m.sort_indices()
    return TermMatrix(m.indptr.astype(np.int64), m.indices.astype(np.int64), m.data.astype(np.float32),
                      vectorizer.get_feature_names_out().tolist())
