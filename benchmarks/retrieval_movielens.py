"""Top-K quality of every retriever on MovieLens-100k (not a test).

The usual protocol of RecBole and implicit's examples: ratings >= 4 are the positives, split
at random 80/10/10 (seeded) into train / validation / test. Each retriever is fitted on the
train part; its top 10 per user excludes the user's train and validation items and is scored
against the test items (Recall@10, NDCG@10 as `models.metrics.topk_metrics`). TF-IDF reads
title words and genres; two_tower the user's age bucket, gender, occupation and the item's genres.

    python -m benchmarks.retrieval_movielens --data-root .recloop/data [--retrievers mf ...]
                                             [--seed 0] [--threads 2] [--hparams '{"mf": {"dim": 32}}']
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from feature_store.text import item_term_matrix
from models.metrics import topk_metrics
from models.retrieval import RETRIEVERS, Interactions, SideInfo, search
from models.retrieval.trainer import RetrievalTrainConfig, fit_retriever


def load(data_root: Path) -> pd.DataFrame:
    files = sorted((data_root / "movielens_100k").glob("day=*/*.parquet"))
    if not files:
        raise SystemExit(f"no MovieLens-100k under {data_root}: run `recloop datasets fetch movielens-100k`")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def side_info(df: pd.DataFrame, users: pd.Index, items: pd.Index) -> SideInfo:
    per_item = df.drop_duplicates("item_id").set_index("item_id").loc[items]
    genres = [g.split("|") if isinstance(g, str) else [] for g in per_item["genres"]]
    terms = item_term_matrix([str(t) for t in per_item["title"]], genres)
    item_terms = Interactions(terms.indptr, terms.indices, terms.data, len(items), len(terms.vocabulary))
    per_user = df.drop_duplicates("user_id").set_index("user_id").loc[users]
    user_cols = [pd.cut(per_user["age"], [0, 18, 25, 35, 45, 50, 56, 200]).cat.codes, per_user["gender"],
                 per_user["occupation"]]
    user_features = np.stack([pd.factorize(c)[0] for c in user_cols], 1).astype(np.int64)
    genre_cols = [c for c in df.columns if c.startswith("genre_")]
    item_features = np.stack([per_item[c].to_numpy() * (j + 1) for j, c in enumerate(genre_cols)], 1).astype(np.int64)
    return SideInfo(item_terms=item_terms, user_features=user_features, item_features=item_features,
                    user_cardinalities=tuple(int(c) for c in user_features.max(0) + 1),
                    item_cardinalities=tuple(len(genre_cols) + 1 for _ in genre_cols))


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, default=Path(".recloop/data"))
    p.add_argument("--retrievers", nargs="+", default=sorted(RETRIEVERS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--hparams", type=json.loads, default={})
    args = p.parse_args(argv)
    df = load(args.data_root)
    pos = df[df["rating"] >= 4]
    users, items = pd.Index(np.sort(pos["user_id"].unique())), pd.Index(np.sort(pos["item_id"].unique()))
    u, i = users.get_indexer(pos["user_id"]), items.get_indexer(pos["item_id"])
    part = np.random.default_rng(args.seed).permutation(len(pos)) % 10  # 0-7 train, 8 valid, 9 test
    n_u, n_i = len(users), len(items)

    def split(mask):
        return Interactions.from_pairs(u[mask], i[mask], n_u, n_i)

    train, seen, test = split(part < 8), split(part < 9), split(part == 9)
    side = side_info(df, users, items)
    test_users = test.active_users()
    rows = []
    for name in args.retrievers:
        config = RetrievalTrainConfig(seed=args.seed, threads=args.threads, epochs=args.epochs)
        fit = fit_retriever(name, train, side, args.hparams.get(name), config)
        model = fit.model
        recs, _ = search(lambda b, r: model(b), torch.from_numpy(test_users), 10, exclude=seen)
        m = topk_metrics(recs, test.lists(test_users), n_i, ks=(10,))
        row = {"retriever": name, "recall@10": m["recall@10"], "ndcg@10": m["ndcg@10"],
               "train_s": fit.seconds, "epochs": fit.epochs, "load": os.getloadavg()[0]}
        rows.append(row)
        print(f"{name:14s} recall@10 {row['recall@10']:.4f}  ndcg@10 {row['ndcg@10']:.4f}  "
              f"fit {fit.seconds:6.1f}s  epochs {fit.epochs}  load {row['load']:.2f}", flush=True)
    return rows


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - start:.0f}s")
