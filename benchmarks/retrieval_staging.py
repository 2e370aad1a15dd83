"""Protocol `staging_day` of the retrieval benchmark: one real night through the loop.

For each dataset, a fresh RECLOOP_HOME (SQLite MLflow), the raw day
partitions, and a copy of the package's spec whose `retrieval.retrievers` lists all eight
retrievers; then `flows.nightly.nightly_retrain` for one run date (approval `auto`, the ranker
`wide_deep` with a few epochs). The rows are read back from what the night logged to MLflow:

    retriever rows   each child run `retriever:<name>`: its `staging_*` metrics (the stage's own
                     `topk_metrics` on the staging day's users, window items excluded),
                     `fit_seconds` as train_seconds, `recommend_seconds` (top-K of every
                     validation and staging user) / those users as retrieval_ms_per_user
    pipeline         the parent run's `pipeline_*` (retriever top-K -> ranker bundle -> top-N)
                     and its `pipeline.models` tag (which retriever, which ranker)
    oracle           synthetic only: the top-K of each staging user by the expected clicks of
                     the generator's world (`oracle_topk`), scored by the same `topk_metrics`
                     against the same staging clicks with the same exclusion

The stage's aggregated data (staging users, their clicks, the window's seen pairs, the id
space) is recorded by wrapping `tasks.retrieve.prepare_retrieval` around the real call: the
oracle is judged on exactly what the retrievers were, and the stage itself runs unchanged.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from models.metrics import topk_metrics

KS = (10, 50, 100)
ALL_RETRIEVERS = ("popularity", "item_knn", "user_knn", "mf", "lightgcn", "autorec", "two_tower", "tfidf_content")
RANKER = "wide_deep"
SYNTHETIC_START = date(2026, 1, 1)

# What a reader of the staging-day tables must know.
NOTES = (
    "The pipeline runs the loop's choice: the retriever champion, i.e. the passing retriever with the best "
    "validation-day Recall@K (the day before staging), re-scored by the ranking champion (wide_deep). The "
    "ranker predicts P(click | shown) (MovieLens: P(rating >= 4 | rated)); a staging positive is an item the user "
    "clicked that day, which also needs the item to be shown (synthetic: items are shown by popularity, whatever "
    "the user). Re-ranking by the conditional probability drops that exposure term, hence a pipeline below its "
    "own retriever's order (in brackets).",
    "oracle (synthetic): each staging user's top-K catalogue items by item_pop x E[true ctr] over the generator's "
    "context distribution (device, hour, position, price noise), window items excluded: the best list for a model "
    "that knows the world but not the day's draws (a ceiling in expectation, not for this one day's clicks).",
    "MovieLens-100k: 39 users are averaged, so one user moves Recall@10 by up to ~0.03; 27 of them rated nothing "
    "before that day (counted on the raw ratings: a new user's ratings come in one session), so the collaborative "
    "retrievers serve them the popularity fallback and differ on 12 users. Synthetic: 1 in 3 staging users has a "
    "click (Zipf-like users, 15% CTR). The oracle's ms/user is its own numpy scoring, not a model's.",
    "train s: the stage's `fit_seconds`; ms/user: its `recommend_seconds` (the top-K, window items excluded, of "
    "every validation- and staging-day user) over those users. Both under `nice -n 19` on a shared 2-core "
    "machine (load in the title line).",
)


@dataclass(frozen=True)
class StagingNight:
    """What one dataset's night is: its run date (staging day = run date - 1), window, data."""

    dataset: str
    run_date: date
    window_days: int
    why: str  # why this day and window
    rows_per_day: int = 0  # synthetic only
    days: int = 0  # synthetic only: days generated from SYNTHETIC_START

    @property
    def staging_day(self) -> date:
        return self.run_date - timedelta(days=1)


def movielens_night(run_date: date = date(1998, 3, 31), window_days: int = 191) -> StagingNight:
    """MovieLens-100k's staging day: 1998-03-30 by default, the busiest day of the last eight
    weeks (39 users with a rating >= 4; the last day, 1998-04-22, has 10). The window reaches
    back to the first day of the data (1997-09-20): a user's history is months old, and 7 days
    of MovieLens hold a few hundred ratings."""
    return StagingNight("movielens_100k", run_date, window_days,
                        why=f"staging day {run_date - timedelta(days=1)}: the busiest day of the last 8 weeks "
                            f"(the last day, 1998-04-22, has 10 users with a positive); window {window_days} days "
                            f"back to the first day of the data (7 days of MovieLens hold a few hundred ratings)")


def synthetic_night(rows_per_day: int = 30_000, window_days: int = 7) -> StagingNight:
    days = window_days + 1
    return StagingNight("synthetic_clicks", SYNTHETIC_START + timedelta(days=days), window_days,
                        why=f"{days} generated days of {rows_per_day:,} impressions (5,000 users, 2,000 items, "
                            f"Zipf-like); the last is the staging day, the loop's default {window_days}-day window",
                        rows_per_day=rows_per_day, days=days)


# ---------------------------------------------------------------- the oracle


def expected_ctr_curve(seed: int, grid: np.ndarray) -> np.ndarray:
    """f(a) = E_context[sigmoid(a + c(context))] on `grid`, where `a` is the (user, item) part
    of the generator's logit and c = dev_hour[device, hour] - slope * log(position) plus the
    price noise, under the generator's context distribution (device, hour, position 1..10
    uniform, drawn independently of the user and the item; price noise by Gauss-Hermite)."""
    from feature_store.generators import synthetic as g

    world = g.make_world(seed)
    hour_p = g._HOUR_WEIGHTS / g._HOUR_WEIGHTS.sum()
    dev_hour = world.dev_hour[:, :, None]  # (3, 24, 1)
    pos = -g.POSITION_SLOPE * np.log(np.arange(1, 11))[None, None, :]  # (1, 1, 10)
    c = (dev_hour + pos).ravel()
    w = (np.asarray(g.DEVICE_PROBS)[:, None, None] * hour_p[None, :, None] * np.full((1, 1, 10), 0.1)).ravel()
    nodes, weights = np.polynomial.hermite_e.hermegauss(7)  # N(0, 1) quadrature
    noise = -g.PRICE_SLOPE * g.PRICE_NOISE_STD / g.PRICE_LOG_STD * nodes
    c = (c[:, None] + noise[None, :]).ravel()
    w = (w[:, None] * (weights / weights.sum())[None, :]).ravel()
    out = np.empty_like(grid)
    for start in range(0, len(grid), 512):
        a = grid[start:start + 512, None] + c[None, :]
        out[start:start + 512] = (1.0 / (1.0 + np.exp(-a))) @ w
    return out


def oracle_topk(seed: int, raw_users: np.ndarray, raw_items: np.ndarray, exclude: Sequence[np.ndarray],
                k: int) -> np.ndarray:
    """Each user's top-`k` catalogue items by expected clicks on the day: P(item shown) x
    E[ctr(user, item, context)] (`expected_ctr_curve`, interpolated on a 0.005 grid of the
    user-item logit). `raw_items`: the catalogue's raw ids in index order; `exclude`: per user
    the catalogue indices not to recommend. (U, k) indices, best first."""
    from feature_store.generators import synthetic as g

    world = g.make_world(seed)
    u = np.array([int(str(x)[1:]) for x in raw_users])
    i = np.array([int(str(x)[1:]) for x in raw_items])
    item_part = (world.item_bias[i] - g.PRICE_SLOPE * (world.item_log_price[i] - g.PRICE_LOG_MEAN) / g.PRICE_LOG_STD)
    a = (g.INTERCEPT + world.seg_cat[world.user_segment[u][:, None], world.item_category[i][None, :]]
         + world.user_factors[u] @ world.item_factors[i].T + world.user_bias[u][:, None] + item_part[None, :])  # (U, I)
    grid = np.arange(a.min() - 0.01, a.max() + 0.01, 0.005)
    expected = world.item_pop[i][None, :] * np.interp(a, grid, expected_ctr_curve(seed, grid))
    for row, items in enumerate(exclude):
        expected[row, items] = -np.inf
    top = np.argsort(-expected, axis=1, kind="stable")[:, :k]
    return np.where(np.isfinite(np.take_along_axis(expected, top, 1)), top, -1)


# ---------------------------------------------------------------- the night


def _spec_with_all_retrievers(dataset: str, retrievers: Sequence[str], out: Path) -> Path:
    """A copy of the package's spec with `retrieval.retrievers` set (the night takes a path)."""
    import yaml

    from feature_store.spec import spec_path

    spec = yaml.safe_load(Path(spec_path(dataset)).read_text())
    spec["retrieval"]["retrievers"] = list(retrievers)
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


def _data(night: StagingNight, data_root: Path, movielens_root: Path | None) -> None:
    if night.dataset == "synthetic_clicks":
        from feature_store.generators.synthetic import generate_synthetic

        generate_synthetic(data_root, start=SYNTHETIC_START, days=night.days, rows_per_day=night.rows_per_day, seed=7)
        return
    source = movielens_root / night.dataset if movielens_root else None
    if source is None or not source.is_dir():
        raise SystemExit(f"MovieLens-100k partitions not found under {movielens_root}: run `recloop datasets fetch "
                         "movielens-100k` or set RECLOOP_MOVIELENS_ROOT")
    shutil.copytree(source, data_root / night.dataset)  # the source stays read-only


def run_night(night: StagingNight, home: Path, retrievers: Sequence[str] = ALL_RETRIEVERS, epochs: int = 2,
              movielens_root: Path | None = None) -> dict[str, Any]:
    """One night of `night.dataset` in `home` with the retrieval stage on; returns the rows
    (see the module docstring) and what the night was."""
    home.mkdir(parents=True, exist_ok=True)
    os.environ.update({
        "RECLOOP_HOME": str(home), "RECLOOP_SETTINGS_FILE": str(home / "absent.env"),
        "RECLOOP_DATA_ROOT": str(home / "data"), "RECLOOP_WINDOW_DAYS": str(night.window_days),
        "RECLOOP_RETRIEVAL_ENABLED": "true", "RECLOOP_APPROVAL_MODE": "auto",
    })
    for var in ("RECLOOP_TRACKING_URI", "RECLOOP_REGISTRY_URI"):
        os.environ.pop(var, None)
    _data(night, home / "data", movielens_root)
    spec_file = _spec_with_all_retrievers(night.dataset, retrievers, home / f"{night.dataset}.yaml")

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    import tasks.retrieve as stage
    from flows.cli import _quiet_libraries
    from flows.nightly import nightly_retrain

    _quiet_libraries()

    seen: list = []
    real = stage.prepare_retrieval

    def recording(*args, **kwargs):  # the real aggregation; its output kept for the oracle
        seen.append(real(*args, **kwargs))
        return seen[-1]

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    stage.prepare_retrieval = recording
    try:
        summary = nightly_retrain(run_date=night.run_date, dataset=str(spec_file), architectures=[RANKER],
                                  epochs=epochs, approval_mode="auto")
    finally:
        stage.prepare_retrieval = real
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()
    if summary.retrieval is None or not seen:
        raise RuntimeError(f"{night.dataset}: the night ran no retrieval stage (notes: {summary.notes})")
    rdata = seen[-1]
    rows = _rows_from_mlflow(night, summary, rdata)
    if night.dataset == "synthetic_clicks":
        rows.append(_oracle_row(night, rdata, summary.retrieval.k))
    load = {"load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in load_after]}
    for row in rows:
        row.update(load)
    return {"dataset": night.dataset, "protocol": "staging_day", "run_date": str(night.run_date),
            "staging_day": str(night.staging_day), "window_days": night.window_days,
            "data_window": summary.to_dict().get("data_window"), "why": night.why,
            "rows_per_day": night.rows_per_day or None, "ranker_epochs": epochs, "ranker": RANKER,
            "staging_users": len(rdata.staging.raw_users), "users_evaluated": rdata.staging.n_evaluated,
            "val_users": len(rdata.val.raw_users), "n_users": rdata.ids.n_users, "n_items": rdata.ids.n_items,
            "train_pairs": int(rdata.train.nnz), "k": summary.retrieval.k, "top_n": summary.retrieval.top_n,
            "retriever_selected": summary.retrieval.selected, "retriever_promoted": summary.retrieval.promoted,
            "pipeline_models": summary.retrieval.pipeline_models, "night_wall_seconds": round(wall, 1),
            "stage_seconds": summary.stage_seconds, "notes": summary.retrieval.notes, **load, "rows": rows}


def _metrics(run_metrics: dict[str, float], prefix: str) -> dict[str, float]:
    """`<prefix>_recall_at_10` -> `recall@10`, in `topk_metric_keys` order."""
    from models.metrics import topk_metric_keys

    return {key: run_metrics[f"{prefix}_{key.replace('@', '_at_')}"] for key in topk_metric_keys(KS)
            if f"{prefix}_{key.replace('@', '_at_')}" in run_metrics}


def _rows_from_mlflow(night: StagingNight, summary, rdata) -> list[dict[str, Any]]:
    from mlflow import MlflowClient

    from tasks.settings import get_settings

    client = MlflowClient(get_settings().resolved_tracking_uri)
    parent = client.get_run(summary.parent_run_id)
    runs = client.search_runs([parent.info.experiment_id],
                              f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.stage = 'retrieval'")
    evaluated_users = len(rdata.val.raw_users) + len(rdata.staging.raw_users)  # what recommend_seconds timed
    base = {"dataset": night.dataset, "protocol": "staging_day"}
    rows = []
    for run in sorted(runs, key=lambda r: ALL_RETRIEVERS.index(r.data.tags["retriever"])):
        m = run.data.metrics
        rows.append({**base, "model": run.data.tags["retriever"], "implementation": "recloop",
                     **_metrics(m, "staging"), "train_seconds": round(m["fit_seconds"], 3),
                     "retrieval_ms_per_user": round(1000 * m["recommend_seconds"] / evaluated_users, 4),
                     "test_users": rdata.staging.n_evaluated,
                     "details": {"run_id": run.info.run_id, "epochs_run": int(m.get("epochs", 0)),
                                 "val_recall@100": m.get("val_recall_at_100"), "gate": run.data.tags.get("gate.verdict"),
                                 "registered_version": run.data.tags.get("registered_version")}})
    p = parent.data.metrics
    n = summary.retrieval.top_n
    rows.append({**base, "model": "pipeline", "implementation": "recloop",
                 **_metrics(p, "pipeline"), "train_seconds": None, "retrieval_ms_per_user": None,
                 "test_users": int(p["pipeline_users"]),
                 "details": {"models": parent.data.tags.get("pipeline.models"), "top_n": n,
                             "retriever_order": _metrics(p, "pipeline_retriever"),
                             "seconds": round(p["pipeline_seconds"], 2)}})
    return rows


def _oracle_row(night: StagingNight, rdata, k: int) -> dict[str, Any]:
    """The oracle on the stage's own staging users, clicks and exclusion (window items)."""
    from tasks.settings import get_settings

    staging = rdata.staging
    exclude = [rdata.seen_staging.row(int(u)) if get_settings().retrieval.exclude_seen else np.empty(0, np.int64)
               for u in staging.users]
    t0 = time.perf_counter()
    topk = oracle_topk(7, staging.raw_users, rdata.ids.items.to_numpy(object), exclude, k)
    seconds = time.perf_counter() - t0
    metrics = topk_metrics(topk, staging.relevant, rdata.ids.n_items, KS)
    return {"dataset": night.dataset, "protocol": "staging_day", "model": "oracle", "implementation": "generator",
            **metrics, "train_seconds": 0.0, "retrieval_ms_per_user": round(1000 * seconds / len(staging.users), 4),
            "test_users": staging.n_evaluated,
            "details": {"rule": "top-K catalogue items by P(item shown) x E_context[true ctr], window items excluded"}}
