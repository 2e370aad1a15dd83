"""The retriever bundle: one MLflow pyfunc model per registered retriever version.

    predict(DataFrame with the user id column, params={"k": 100})
        -> DataFrame [<user id>, rank, <item id>, score], k rows per user, best first

Raw ids in, raw item ids out: the bundle carries the vocabularies (`feature_store.interactions.
IdSpace`: user values, catalogue item values), the fitted retriever (the whole module, pickled
by torch: retrievers size their buffers and tables from the data at fit time, so a state dict
alone could not rebuild them) and the pairs each user interacted with in the training window,
excluded from the list when `exclude_seen`. An unknown user gets what the retriever gives a user
without history. Loading runs pickled code, as a ranker bundle's workflow does: own bundles only.
Ships the same project code as the ranker bundle (`tasks.bundle.bundle_code`).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch

MODEL_NAME_IN_RUN = "retriever"


def top_k(model, users, k: int, exclude=None) -> tuple[np.ndarray, np.ndarray]:
    """`model.recommend`, excluding `exclude` (an `Interactions`, or None: nothing) instead of
    the model's own history: the night excludes every pair a user had in the window, positive
    or not."""
    return model.recommend(users, k, exclude_seen=exclude is not None, exclude=exclude)


def _save_seen(path: Path, seen) -> None:
    np.savez(path, indptr=seen.indptr, indices=seen.indices, n_users=seen.n_users, n_items=seen.n_items)


def _load_seen(path: str):
    from models.retrieval.base import Interactions

    z = np.load(path)
    return Interactions(z["indptr"], z["indices"], np.ones(z["indices"].size, np.float32),
                        int(z["n_users"]), int(z["n_items"]))


class RetrieverBundle(mlflow.pyfunc.PythonModel):
    """User rows in, ranked raw item ids with scores out."""

    def load_context(self, context: Any) -> None:
        from feature_store.interactions import IdSpace

        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        users = pd.read_parquet(context.artifacts["users"])["value"]
        items = pd.read_parquet(context.artifacts["items"])["value"]
        self.ids = IdSpace(meta["user_column"], meta["item_column"], pd.Index(users), pd.Index(items))
        self.k, self.exclude_seen = int(meta["k"]), bool(meta["exclude_seen"])
        self.model = torch.load(context.artifacts["retriever"], weights_only=False)
        self.seen = _load_seen(context.artifacts["seen"]) if self.exclude_seen else None

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return recommend_frame(self.model, self.ids, model_input, int((params or {}).get("k") or self.k), self.seen)


def recommend_frame(model, ids, users: pd.DataFrame, k: int, seen=None) -> pd.DataFrame:
    """The bundle's output for user rows (also used in memory, so both agree by construction)."""
    if ids.user_column not in users.columns:
        raise ValueError(f"input rows lack the user id column '{ids.user_column}'")
    raw = users[ids.user_column].to_numpy()
    items, scores = top_k(model, ids.user_index(raw), k, seen)
    ok = items >= 0
    per_user = ok.sum(1)
    return pd.DataFrame({
        ids.user_column: np.repeat(raw, per_user),
        "rank": np.concatenate([np.arange(1, n + 1) for n in per_user]) if len(per_user) else np.empty(0, int),
        ids.item_column: ids.item_values(items[ok]),
        "score": scores[ok].astype(np.float64),
    })


def log_retriever_bundle(model, ids, seen, spec, k: int, exclude_seen: bool, example_users: np.ndarray) -> str:
    """Log the bundle into the active MLflow run; returns the model URI."""
    from mlflow.models import infer_signature

    from feature_store.spec import spec_to_yaml
    from tasks.bundle import bundle_code, bundle_requirements

    with tempfile.TemporaryDirectory(prefix="recloop-retriever-") as tmp:
        tmp_path = Path(tmp)
        torch.save(model, tmp_path / "retriever.pt")
        _save_seen(tmp_path / "seen.npz", seen)
        pd.DataFrame({"value": ids.users}).to_parquet(tmp_path / "users.parquet")
        pd.DataFrame({"value": ids.items}).to_parquet(tmp_path / "items.parquet")
        (tmp_path / "meta.json").write_text(json.dumps({"user_column": ids.user_column, "item_column": ids.item_column,
                                                        "k": k, "exclude_seen": exclude_seen}))
        (tmp_path / "spec.yaml").write_text(spec_to_yaml(spec))
        example = pd.DataFrame({ids.user_column: example_users[:3]})
        out = recommend_frame(model, ids, example, k, seen if exclude_seen else None)
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=RetrieverBundle(),
            artifacts={name: str(tmp_path / file) for name, file in (
                ("retriever", "retriever.pt"), ("seen", "seen.npz"), ("users", "users.parquet"),
                ("items", "items.parquet"), ("meta", "meta.json"), ("spec", "spec.yaml"))},
            signature=infer_signature(example, out, params={"k": k}),
            input_example=example,
            pip_requirements=bundle_requirements(),
            code_paths=bundle_code(tmp_path / "code"),
        )
    return info.model_uri
