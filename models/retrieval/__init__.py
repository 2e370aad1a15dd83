"""Retrievers: candidate generation over the whole catalogue, a name -> class registry.

    model = build_retriever("item_knn", n_users, n_items, {"neighbours": 100})
    model.fit(train)                      # closed-form models; trained ones: models.retrieval.trainer
    items, scores = model.recommend(users, k=100, exclude_seen=True)

Every retriever is an `nn.Module` (`forward(users) -> scores (U, n_items)`) with a frozen
`Config` next to it (its `config_class`), one file each, the paper and formula in its docstring. The catalogue
search is `search.search` (exact; the one function to swap for FAISS at millions of items).

    popularity     item counts in the training window                  Cremonesi 2010
    item_knn       cosine item-item neighbours of the user's items      Sarwar 2001
    user_knn       cosine user-user neighbours' items                   Herlocker 1999
    mf             biased MF b_i + <p_u, q_i>, BPR                      Koren 2009, Rendle 2009
    lightgcn       graph-smoothed embeddings, BPR                       He 2020, 2002.02126
    tfidf_content  cosine of item TF-IDF to the user's mean profile      Pazzani 2007
    two_tower      user tower . item tower, log-q sampled softmax        Yi 2019 (RecSys)
    autorec        I-AutoRec, user u's entry of each item's reconstruction  Sedhain 2015
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models._config import config_from_dict
from models.retrieval import (
    autorec,
    item_knn,
    lightgcn,
    mf,
    popularity,
    tfidf_content,
    two_tower,
    user_knn,
)
from models.retrieval.base import Interactions, Retriever, SideInfo
from models.retrieval.search import search

RETRIEVERS: dict[str, type[Retriever]] = {
    "popularity": popularity.Popularity,
    "item_knn": item_knn.ItemKNN,
    "user_knn": user_knn.UserKNN,
    "mf": mf.MF,
    "lightgcn": lightgcn.LightGCN,
    "tfidf_content": tfidf_content.TfidfContent,
    "two_tower": two_tower.TwoTowerRetriever,
    "autorec": autorec.AutoRec,
}

__all__ = ["RETRIEVERS", "Interactions", "Retriever", "SideInfo", "build_retriever", "retriever_class", "search"]


def retriever_class(name: str) -> type[Retriever]:
    try:
        return RETRIEVERS[name]
    except KeyError:
        raise ValueError(f"unknown retriever {name!r}; valid: {sorted(RETRIEVERS)}") from None


def build_retriever(name: str, n_users: int, n_items: int, hparams: Mapping[str, Any] | None = None,
                    side: SideInfo | None = None) -> Retriever:
    """A retriever by name, its `Config` from `hparams` (unknown keys are an error); `side`
    sizes the models that read features (two_tower), the others ignore it."""
    cls = retriever_class(name)
    config = config_from_dict(cls.config_class, hparams, what=f"retriever {name!r}")
    return cls(n_users, n_items, config, side)
