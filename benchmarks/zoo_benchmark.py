"""Benchmark of the model zoo on synthetic, Adult and MovieLens-100k data (not a test).

Every architecture in `models.ARCHITECTURES` is trained with the same trainer on the same
preprocessed tensors of each dataset, and scored on a test split nobody trained or stopped on:

- synthetic_clicks: 10 days x 20,000 rows (seed 7); train days 1-8, validation day 9, test
  day 10. The oracle (the planted click probability) gives the ceiling.
- adult: the official split, test = the 16,281 rows of adult.test; 10% of adult.data (seeded)
  is the validation slice for early stopping. HistGradientBoosting and logistic regression on
  the same raw columns are in the same table: that is what a user would pick instead.
- movielens_100k (when fetched): time-ordered by day; the last days holding 10% of the ratings
  are the test, the 10% before them the validation.

Per row: test AUC and logloss, parameters, training samples/s (optimizer steps only) and
inference rows/s (the whole test split through `predict_proba`, best of three), on this
machine. Writes benchmarks/results/zoo.json and zoo.md, and one MLflow run per (dataset, model)
in experiment `bench-zoo-<dataset>` of the tracking store under $RECLOOP_HOME.

    python -m benchmarks.zoo_benchmark [--datasets synthetic adult movielens] [--archs ...]
                                       [--epochs N] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.report import write_results

RESULTS = Path(__file__).parent / "results"
DATASETS = ("synthetic", "adult", "movielens")
# Epochs per dataset (early stopping on validation logloss, patience 2, keeps the best epoch).
# Adult and MovieLens are small: their best epoch came late at the loop's 4-5.
EPOCHS = {"synthetic": 5, "adult": 10, "movielens": 10}
# Architectures built on a user side and an item side (the spec's user_columns/item_columns).
USER_ITEM_ARCHS = {"ncf", "two_tower", "split_network"}


@dataclass
class Split:
    dataset: str
    spec_name: str
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    description: str


def synthetic_split(root: Path) -> Split:
    from feature_store.generators.synthetic import generate_synthetic
    from feature_store.partitions import read_days

    start = date(2026, 1, 1)
    generate_synthetic(root, start=start, days=10, rows_per_day=20_000, seed=7)
    days = [date(2026, 1, d) for d in range(1, 11)]
    return Split("synthetic", "synthetic_clicks", read_days(root, "synthetic_clicks", days[:8]),
                 read_days(root, "synthetic_clicks", days[8:9]), read_days(root, "synthetic_clicks", days[9:]),
                 "train 2026-01-01..08 (160k rows), validation 01-09, test 01-10 (20k rows)")


def adult_split() -> Split:
    from feature_store.datasets.adult import load_adult

    train, test = load_adult()
    val_mask = np.random.default_rng(0).random(len(train)) < 0.1
    return Split("adult", "adult", train[~val_mask].reset_index(drop=True), train[val_mask].reset_index(drop=True),
                 test, f"official split: train {int((~val_mask).sum())} + validation {int(val_mask.sum())} rows "
                       f"of adult.data, test = adult.test ({len(test)} rows)")


def movielens_split(root: Path) -> Split:
    from feature_store.partitions import available_days, read_days

    days = available_days(root, "movielens_100k")
    frame = read_days(root, "movielens_100k", days)
    share = frame.groupby("day").size().reindex([str(d) for d in days]).fillna(0).cumsum() / len(frame)
    val_start = next(d for d, s in share.items() if s >= 0.8)
    test_start = next(d for d, s in share.items() if s >= 0.9)
    day = frame["day"].astype(str)
    train, val, test = (frame[m].reset_index(drop=True)
                        for m in (day <= val_start, (day > val_start) & (day <= test_start), day > test_start))
    return Split("movielens", "movielens_100k", train, val, test,
                 f"by day: train ..{val_start} ({len(train)} ratings), validation ..{test_start} "
                 f"({len(val)}), test {test['day'].min()}..{test['day'].max()} ({len(test)})")


def scores(y: np.ndarray, p: np.ndarray, seen_users: np.ndarray | None) -> dict:
    """Test AUC and logloss; with a user column also the AUC on rows whose user was in training
    (on a time split most test users can be new: there only side features and popularity help)."""
    from models.metrics import log_loss, roc_auc

    out = {"auc": roc_auc(y, p), "logloss": log_loss(y, p)}
    if seen_users is not None and 0 < y[seen_users].mean() < 1:
        out["auc_seen_users"] = roc_auc(y[seen_users], p[seen_users])
    return out


def train_architecture(arch: str, data, config, seen_users: np.ndarray | None) -> dict:
    from models import build_model
    from models.trainer import fit, predict_proba

    model = build_model(arch, data.schema, seed=config.seed)
    result = fit(model, data.train, data.val, config)
    p = predict_proba(model, data.holdout)
    timings = []
    for _ in range(3):
        t0 = time.perf_counter()
        predict_proba(model, data.holdout)
        timings.append(time.perf_counter() - t0)
    y = data.holdout_labels
    return {
        "model": arch, "kind": "recloop", **scores(y, p, seen_users),
        "params": sum(t.numel() for t in model.parameters()), "best_epoch": result.best_epoch,
        "val_auc": result.best_val_auc, "train_samples_per_s": result.train_samples_per_s,
        "infer_rows_per_s": len(y) / min(timings),
    }


def reference_rows(split: Split, spec, y: np.ndarray, seen_users: np.ndarray | None) -> list[dict]:
    """Popularity (datasets with an item), the oracle (synthetic), GBDT and LR (Adult)."""
    from models.baselines import popularity_scores

    rows = []
    if spec.item_columns:
        t0 = time.perf_counter()
        item = spec.item_columns[0]
        p = popularity_scores(split.train[item], split.train[spec.label], split.test[item])
        rows.append({"model": "popularity", "kind": "baseline", **scores(y, p, seen_users),
                     "infer_rows_per_s": len(y) / (time.perf_counter() - t0)})
    if spec.oracle_column:
        p = split.test[spec.oracle_column].to_numpy(dtype=np.float64)
        rows.append({"model": "oracle (true CTR)", "kind": "ceiling", **scores(y, p, seen_users)})
    if split.dataset == "adult":
        rows += sklearn_rows(split, spec, y)  # no user column on Adult
    return rows


def sklearn_rows(split: Split, spec, y: np.ndarray) -> list[dict]:
    """HistGradientBoosting (native categoricals) and one-hot logistic regression."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cats = [c.name for c in spec.categorical]
    conts = [c.name for c in spec.continuous]

    def frame(df: pd.DataFrame) -> pd.DataFrame:
        out = df[cats + conts].copy()
        for c in cats:
            out[c] = out[c].astype(str)
        return out

    train = pd.concat([split.train, split.val], ignore_index=True)  # both use their own validation
    x_train, y_train, x_test = frame(train), train[spec.label].to_numpy(), frame(split.test)
    categories = {c: sorted(x_train[c].unique()) for c in cats}
    for x in (x_train, x_test):
        for c in cats:
            x[c] = pd.Categorical(x[c], categories=categories[c])
    models = {
        "HistGradientBoosting": HistGradientBoostingClassifier(
            categorical_features="from_dtype", max_iter=1000, learning_rate=0.05, early_stopping=True,
            validation_fraction=0.1, n_iter_no_change=20, random_state=0),
        "logistic regression": make_pipeline(
            ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), cats),
                               ("num", StandardScaler(), conts)]),
            LogisticRegression(max_iter=2000, C=1.0)),
    }
    rows = []
    for name, model in models.items():
        t0 = time.perf_counter()
        model.fit(x_train, y_train)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        p = model.predict_proba(x_test)[:, 1]
        rows.append({"model": name, "kind": "sklearn", **scores(y, p, None),
                     "train_samples_per_s": len(x_train) / fit_s, "fit_seconds": fit_s,
                     "infer_rows_per_s": len(y) / (time.perf_counter() - t0)})
    return rows


def run_dataset(split: Split, archs: list[str], config, log) -> dict:
    from feature_store.spec import load_spec
    from tasks.preprocess import prepare_frames

    spec = load_spec(split.spec_name)
    data = prepare_frames(spec, split.train, split.val, split.test)
    y = data.holdout_labels
    user = spec.user_columns[0] if spec.user_columns else None
    seen_users = split.test[user].isin(split.train[user]).to_numpy() if user else None
    rows = reference_rows(split, spec, y, seen_users)
    for arch in archs:
        if arch in USER_ITEM_ARCHS and not (data.schema.user_fields and data.schema.item_fields):
            log(f"[{split.dataset}] {arch}: skipped, the spec names no user and item columns")
            continue
        t0 = time.perf_counter()
        row = train_architecture(arch, data, config, seen_users)
        row["wall_seconds"] = time.perf_counter() - t0
        log(f"[{split.dataset}] {arch}: AUC {row['auc']:.4f}  logloss {row['logloss']:.4f}  "
            f"({row['train_samples_per_s']:,.0f} samples/s, epoch {row['best_epoch']}, {row['wall_seconds']:.0f}s)")
        rows.append(row)
    return {"dataset": split.dataset, "spec": split.spec_name, "split": split.description,
            "test_rows": len(y), "test_rows_seen_users": None if user is None else float(seen_users.mean()), "test_ctr": float(y.mean()), "epochs": config.epochs, "rows": rows}


def log_to_mlflow(result: dict) -> None:
    import mlflow

    from tasks import tracking
    from tasks.settings import get_settings

    tracking.configure(get_settings())
    for ds in result["datasets"]:
        mlflow.set_experiment(f"bench-zoo-{ds['spec']}")
        for row in ds["rows"]:
            with mlflow.start_run(run_name=row["model"]):
                mlflow.set_tags({"benchmark": "zoo", "kind": row["kind"], "split": ds["split"]})
                mlflow.log_params({"model": row["model"], "epochs": ds["epochs"], "threads": result["threads"]})
                mlflow.log_metrics({k: float(v) for k, v in row.items()
                                    if isinstance(v, (int, float)) and not isinstance(v, bool)})


def markdown(result: dict) -> str:
    lines = [f"# Model zoo benchmark ({result['machine']['cpus']} CPUs, {result['threads']} torch threads)", ""]
    for ds in result["datasets"]:
        seen = ds.get("test_rows_seen_users")
        seen_note = "" if seen is None else (f" {seen:.0%} of the test rows come from users seen in training; "
                                             "the last column is the AUC on those rows.")
        lines += [f"## {ds['dataset']}: {ds['split']}", "",
                  f"Test CTR {ds['test_ctr']:.3f}; up to {ds['epochs']} epochs, early stopping on validation "
                  f"logloss (patience 2).{seen_note}", "",
                  "| model | test AUC | test logloss | params | train samples/s | inference rows/s | best epoch |"
                  + (" AUC, seen users |" if seen is not None else ""),
                  "|---|---|---|---|---|---|---|" + ("---|" if seen is not None else "")]
        ranked = sorted(ds["rows"], key=lambda r: (r["kind"] != "ceiling", -r["auc"]))
        for r in ranked:
            def f(key, fmt, r=r):
                return "" if r.get(key) is None else format(r[key], fmt)
            lines.append(f"| {r['model']} | {r['auc']:.4f} | {r['logloss']:.4f} | {f('params', ',')} "
                         f"| {f('train_samples_per_s', ',.0f')} | {f('infer_rows_per_s', ',.0f')} "
                         f"| {f('best_epoch', 'd')} |" + (f" {f('auc_seen_users', '.4f')} |" if seen is not None else ""))
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    from models import ARCHITECTURES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    ap.add_argument("--archs", nargs="+", default=list(ARCHITECTURES))
    ap.add_argument("--epochs", type=int, default=None, help="override the per-dataset epochs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    os.environ.setdefault("RECLOOP_HOME", str(Path(".recloop").resolve()))
    from flows.cli import _quiet_libraries

    _quiet_libraries()
    from models.trainer import TrainConfig
    from tasks.settings import get_settings

    movielens_root = Path(os.environ.get("RECLOOP_MOVIELENS_ROOT") or get_settings().resolved_data_root)
    splits = {
        "synthetic": lambda: synthetic_split(Path(tempfile.mkdtemp(prefix="recloop-zoo-"))),
        "adult": adult_split,
        "movielens": lambda: movielens_split(movielens_root),
    }
    result = {"benchmark": "model zoo", "threads": args.threads, "datasets": [],
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}}
    for name in args.datasets:
        if name == "movielens" and not (movielens_root / "movielens_100k").exists():
            print(f"skipping movielens: not fetched under {movielens_root} "
                  "(run `recloop datasets fetch movielens-100k`)")
            continue
        config = replace(TrainConfig(), epochs=args.epochs or EPOCHS[name], threads=args.threads)
        result["datasets"].append(run_dataset(splits[name](), args.archs, config, print))
    log_to_mlflow(result)
    write_results(args.out, "zoo", result, markdown(result))
    return result


if __name__ == "__main__":
    main()
