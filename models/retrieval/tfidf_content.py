"""Content-based retrieval: items whose text is like the text of the user's items (the
vector-space profile of Pazzani and Billsus 2007, "Content-based recommendation systems",
The Adaptive Web, with TF-IDF weights after Salton and Buckley 1988):

    t_i        = item i's TF-IDF row (SideInfo.item_terms), L2-normalized
    profile_u  = mean_{i in I_u} t_i                   (the user's history items)
    score(u, j) = <profile_u / |profile_u|, t_j>        cosine of the profile and each item

The term weights come from `feature_store.text.item_term_matrix` (title words and tags). The
history buffers hold no timestamps or weights, so the profile is the plain mean (a
recency-weighted one needs the night to pass weights in the history). Items without terms
score 0; a user without history gets the popularity order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.retrieval.base import Interactions, Retriever, SideInfo
from models.retrieval.similarity import csr_tensor, row_normalize


@dataclass(frozen=True)
class Config:
    pass


class TfidfContent(Retriever):
    """Forward: users int64 (U,) -> float32 (U, n_items), cosine of the users' mean TF-IDF
    profile (U, n_terms) with every item's row, `normalize(H T / |H|) T^T`."""

    name = "tfidf_content"
    config_class = Config

    def __init__(self, n_users: int, n_items: int, config: Config = Config(), side: SideInfo | None = None):
        super().__init__(n_users, n_items)
        self.config = config
        self.register_buffer("terms_indptr", torch.zeros(n_items + 1, dtype=torch.int64))
        self.register_buffer("terms_indices", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("terms_values", torch.zeros(0))

    def fit(self, train: Interactions, side: SideInfo | None = None) -> None:
        terms = side.item_terms if side is not None else None
        if terms is None or terms.n_users != self.n_items:
            raise ValueError(f"tfidf_content needs SideInfo.item_terms with one row per item ({self.n_items}), "
                             f"got {None if terms is None else terms.n_users}")
        self.set_history(train)
        self.terms_indptr = torch.from_numpy(terms.indptr.copy())
        self.terms_indices = torch.from_numpy(terms.indices.copy())
        self.terms_values = torch.from_numpy(row_normalize(terms.indptr, terms.data))

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        n_terms = int(self.terms_indices.max()) + 1 if self.terms_indices.numel() else 1  # unused terms add nothing
        t = csr_tensor(self.terms_indptr, self.terms_indices, self.terms_values, (self.n_items, n_terms))
        t_t = t.to_sparse_coo().t().coalesce().to_sparse_csr()  # (n_terms, n_items)
        h = self.history_matrix(users)  # (U, n_items)
        profile = (t_t @ h.t()).t() / h.sum(1, keepdim=True).clamp(min=1.0)  # (U, n_terms)
        profile = torch.nn.functional.normalize(profile, dim=1)
        return (t @ profile.t()).t()  # (n_items, n_terms) (n_terms, U) -> (U, n_items)
