"""Retrieval benchmark (not a test): recloop's retrievers next to RecBole and implicit on the
same MovieLens-100k split, scored by one metric function (`models.metrics.topk_metrics`).

    make bench-retrieval   ->  benchmarks/results/retrieval.{json,md}
    python -m benchmarks.retrieval [--protocols random_80_10_10 staging_day] [--peers recbole:BPR ...]
                                   [--recloop popularity ...] [--max-epochs 2] [--threads 2] [--out DIR]
                                   [--staging-datasets movielens_100k synthetic_clicks] [--ranker-epochs 2]

A protocol left out keeps its rows from the existing `retrieval.json` (`--protocols staging_day`
rewrites only the staging-day rows, of the datasets it ran).

Protocol `staging_day` (benchmarks/retrieval_staging.py): one real night per dataset through
`flows.nightly.nightly_retrain` with all eight retrievers; rows read back from the night's
MLflow runs (retrievers, the retriever -> ranker pipeline) and, on synthetic_clicks, the
generator's oracle top-K on the same staging users.

Protocol `random_80_10_10` (benchmarks/retrieval_data.py): ratings >= 4 as positives, each
user's positives split 80/10/10 at random (seed 2020, RecBole's rule for small users), full
ranking over every train item minus the user's train and valid items, test users = users with
a test positive. Every implementation hands back its top-100 per test user; this module checks
the lists (right users, nothing excluded recommended) and computes every row's metrics from
them, so rows are comparable whatever the library reports. RecBole's own test metrics are kept
next to ours as a cross-check of the metric code.

Timings: `train_seconds` is model construction + fit, measured inside the peer's process
(RecBole: including its per-epoch validation for early stopping, which is part of its recipe;
`train_seconds_without_validation` has it taken out). `retrieval_ms_per_user`: the top-K of
every test user, divided by their number. The machine is shared: the load average before and
after each model is in its row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import write_results
from benchmarks.retrieval_data import RetrievalSplit, movielens_random_split, movielens_side_info
from benchmarks.retrieval_peers import (
    PEERS,
    PeerSpec,
    ensure_peers,
    run_peer,
    site_dir,
    write_split,
)
from models.metrics import topk_metrics

RESULTS = Path(__file__).parent / "results"
KS = (10, 50, 100)
KMAX = max(KS)
THREADS = 2
PROTOCOLS = ("random_80_10_10", "staging_day")
STAGING_DATASETS = ("movielens_100k", "synthetic_clicks")

# recloop's retrievers, all of them at their defaults (models/retrieval/<name>.py Config and
# the loop defaults of models/retrieval/trainer.py); RECLOOP_HPARAMS overrides per name.
RECLOOP_RETRIEVERS: tuple[str, ...] = ("popularity", "item_knn", "user_knn", "mf", "lightgcn", "autorec",
                                       "two_tower", "tfidf_content")
RECLOOP_HPARAMS: dict[str, dict[str, Any]] = {}

# What a reader of the table must know about the peers (checked in their 1.2.1 / 0.7.3 source).
NOTES = (
    "RecBole's Pop does not count interactions: it is a POINTWISE model, so its training batches "
    "hold the positives plus one uniform negative each, and `item_cnt[item] = item_cnt[item] + 1` "
    "with repeated indices adds 1 per batch, not per occurrence. Its score is 'batches in which the "
    "item appeared, positive or sampled negative', which is why it trails exact counts.",
    "implicit's item-kNN scores only the K=20 neighbours of a user's items and fills the rest of "
    "the list with zero-score items, already-liked ones included; the worker asks for more and "
    "drops train and valid items itself.",
    "RecBole stops after 10 epochs without a better validation MRR@10 and tests the best epoch; "
    "implicit has no validation: BPR runs its 100 iterations, kNN is closed form. implicit's BPR "
    "updates in parallel without locks (Hogwild): with 2 threads its numbers move by ~0.003 "
    "recall@10 between runs despite the seed; RecBole's rows repeat exactly.",
    "Valid/test positives whose item has no train positive are dropped before anyone sees the "
    "split (counts in the title): no collaborative model can rank them.",
)


@dataclass(frozen=True)
class RankedLists:
    """One implementation's output on a split: what every row is computed from."""

    users: np.ndarray  # (U,) dense test users, ascending
    topk: np.ndarray  # (U, KMAX) dense item ids, best first, -1 padded
    train_seconds: float
    retrieval_seconds: float
    details: dict[str, Any] = field(default_factory=dict)  # epochs, hyper-parameters, own metrics...


def drop_valid(ranked: np.ndarray, valid_items: Sequence[np.ndarray], kmax: int) -> np.ndarray:
    """Each row of `ranked` without the user's valid items (and -1s), cut to `kmax`, -1 padded."""
    out = np.full((len(ranked), kmax), -1, dtype=np.int64)
    for row, (items, drop) in enumerate(zip(ranked, valid_items, strict=True)):
        keep = items[(items >= 0) & ~np.isin(items, drop)][:kmax]
        out[row, : len(keep)] = keep
    return out


def recloop_retrievers(split: RetrievalSplit, names: Sequence[str], *, kmax: int = KMAX,
                       threads: int = THREADS, seed: int = 0, side=None) -> dict[str, RankedLists]:
    """recloop's retrievers on `split`, by recloop name -> ranked top-`kmax` lists (`side`: the
    `SideInfo` that tfidf_content and two_tower read).

    Each is fitted on the train pairs only (`models.retrieval.trainer.fit_retriever`, with
    `RECLOOP_HPARAMS[name]`) and ranks with its own `recommend` (train items excluded); the
    user's valid items are then dropped here (RecBole's test protocol excludes train + valid).
    Valid is not used for early stopping yet: a retriever that wants it gets it from
    `split.valid` here.
    """
    if not names:
        return {}
    import torch

    from models.retrieval.base import Interactions, SideInfo
    from models.retrieval.trainer import RetrievalTrainConfig, fit_retriever

    torch.set_num_threads(threads)
    train = Interactions.from_pairs(split.train[:, 0], split.train[:, 1], split.n_users, split.n_items)
    users = split.test_users()
    valid_items = split.items_of("valid", users)
    extra = max((len(v) for v in valid_items), default=0)
    runs: dict[str, RankedLists] = {}
    for name in names:
        load_before = os.getloadavg()
        config = RetrievalTrainConfig(seed=seed, threads=threads)
        fit = fit_retriever(name, train, side or SideInfo(), RECLOOP_HPARAMS.get(name), config)
        start = time.perf_counter()
        ranked, _ = fit.model.recommend(users, k=min(kmax + extra, split.n_items), exclude_seen=True)
        topk = drop_valid(ranked, valid_items, kmax)
        runs[name] = RankedLists(users=users, topk=topk, train_seconds=fit.seconds,
                                 retrieval_seconds=time.perf_counter() - start,
                                 details={"epochs_run": fit.epochs, "hyperparameters": RECLOOP_HPARAMS.get(name, {}),
                                          "load": (load_before, os.getloadavg())})
        print(f"recloop {name}: train {fit.seconds:.1f}s", flush=True)
    return runs


def check_lists(split: RetrievalSplit, ranked: RankedLists, who: str) -> None:
    """The protocol, enforced on every implementation: all test users, no excluded or unknown item."""
    if not np.array_equal(ranked.users, split.test_users()):
        raise ValueError(f"{who}: ranked {len(ranked.users)} users, the split has {len(split.test_users())} test users")
    if ranked.topk.shape != (len(ranked.users), KMAX) or ranked.topk.max() >= split.n_items:
        raise ValueError(f"{who}: top-K of shape {ranked.topk.shape}, max id {ranked.topk.max()}")
    for u, row, exc in zip(ranked.users, ranked.topk, split.excluded(ranked.users), strict=True):
        listed = row[row >= 0]
        if np.isin(listed, exc).any() or len(np.unique(listed)) != len(listed):
            raise ValueError(f"{who}: user {u}'s list repeats an item or holds a train/valid item")


def make_row(split: RetrievalSplit, model: str, implementation: str, ranked: RankedLists,
             load: tuple[Sequence[float], Sequence[float]] | None) -> dict[str, Any]:
    check_lists(split, ranked, f"{implementation} {model}")
    metrics = topk_metrics(ranked.topk, split.relevant(ranked.users), split.n_items, ks=KS)
    row: dict[str, Any] = {"dataset": split.dataset, "protocol": split.protocol, "model": model,
                           "implementation": implementation, **metrics,
                           "train_seconds": round(ranked.train_seconds, 3),
                           "retrieval_ms_per_user": round(1000 * ranked.retrieval_seconds / len(ranked.users), 4),
                           "test_users": len(ranked.users)}
    if load is not None:
        row["load_before"] = [round(x, 2) for x in load[0]]
        row["load_after"] = [round(x, 2) for x in load[1]]
    own = ranked.details.get("own_test_metrics")
    if own:  # the peer's own evaluation of the same model on the same test set
        row["peer_reported"] = {k: own[k] for k in ("recall@10", "ndcg@10", "hit@10", "mrr@10") if k in own}
        row["peer_reported_minus_ours"] = {k: round(v - metrics[k], 6) for k, v in row["peer_reported"].items()}
    row["details"] = {k: v for k, v in ranked.details.items() if k != "own_test_metrics"}
    return row


def comparisons(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """recloop vs each peer implementation of the same model: quality deltas, time ratio."""
    out = []
    for ours in (r for r in rows if r["implementation"] == "recloop"):
        for peer in rows:
            if peer["implementation"] == "recloop" or (peer["dataset"], peer["protocol"], peer["model"]) != (
                    ours["dataset"], ours["protocol"], ours["model"]):
                continue
            out.append({"model": ours["model"], "peer": peer["implementation"],
                        "recall@10_delta": ours["recall@10"] - peer["recall@10"],
                        "ndcg@10_delta": ours["ndcg@10"] - peer["ndcg@10"],
                        "peer_train_s_over_recloop": peer["train_seconds"] / max(ours["train_seconds"], 1e-9)})
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Retrieval: {result['split']}", "",
             f"Metrics from `models.metrics.topk_metrics` on each implementation's top-{KMAX} (train + valid items "
             f"excluded). train s = model construction + fit in the implementation's own process "
             f"(RecBole: with its per-epoch validation for early stopping; without it in brackets). "
             f"{result['threads']} threads; load = 1-min load average before -> after (shared machine: "
             f"timings are noisy).", "",
             "| model | implementation | recall@10 | ndcg@10 | hit@10 | recall@50 | ndcg@50 | recall@100 | "
             "coverage@10 | train s | ms/user | epochs | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        d = r["details"]
        without = d.get("train_seconds_without_validation")
        train = f"{r['train_seconds']:.2f}" + (f" ({without:.2f})" if without is not None else "")
        epochs = d.get("epochs_run") or ""
        if d.get("best_epoch"):
            epochs = f"{epochs} (best {d['best_epoch']})"
        load = f"{r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f}" if "load_before" in r else ""
        lines.append(f"| {r['model']} | {r['implementation']} | {r['recall@10']:.4f} | {r['ndcg@10']:.4f} | "
                     f"{r['hit@10']:.4f} | {r['recall@50']:.4f} | {r['ndcg@50']:.4f} | {r['recall@100']:.4f} | "
                     f"{r['coverage@10']:.3f} | {train} | {r['retrieval_ms_per_user']:.3f} | {epochs} | {load} |")
    checked = [r for r in result["rows"] if "peer_reported" in r]
    if checked:
        lines += ["", "Cross-check: the peer's own test metrics minus ours on its lists (0 = same metric code).", "",
                  "| model | implementation | recall@10 own / ours | ndcg@10 own / ours |", "|---|---|---|---|"]
        for r in checked:
            p = r["peer_reported"]
            lines.append(f"| {r['model']} | {r['implementation']} | {p['recall@10']:.4f} / {r['recall@10']:.4f} | "
                         f"{p['ndcg@10']:.4f} / {r['ndcg@10']:.4f} |")
    lines += ["", "Notes:", ""] + [f"- {n}" for n in result["notes"]]
    if result["comparisons"]:
        lines += ["", "| model | vs peer | recall@10 delta | ndcg@10 delta | peer train s / recloop |",
                  "|---|---|---|---|---|"]
        for c in result["comparisons"]:
            lines.append(f"| {c['model']} | {c['peer']} | {c['recall@10_delta']:+.4f} | {c['ndcg@10_delta']:+.4f} | "
                         f"{c['peer_train_s_over_recloop']:.2f}x |")
    return "\n".join(lines) + "\n"


def staging_markdown(night: dict[str, Any]) -> str:
    """One dataset's `staging_day` table: the night's retrievers, the pipeline, the oracle."""
    lines = [f"## staging_day: {night['dataset']}, run date {night['run_date']} (staging day {night['staging_day']})",
             "", f"{night['why']}. Training window {night['data_window']}; {night['train_pairs']:,} positive pairs, "
             f"{night['n_items']:,} catalogue items; {night['users_evaluated']:,} of the staging day's "
             f"{night['staging_users']:,} users have a positive (the users averaged). Metrics: the stage's own "
             f"`staging_*` (window items excluded), read from each `retriever:<name>` run; pipeline: "
             f"{night['pipeline_models']} (top-{night['top_n']}; retriever order in brackets). Night wall "
             f"{night['night_wall_seconds']:.0f} s; load {night['load_before'][0]:.1f} -> {night['load_after'][0]:.1f}.",
             "", "| model | recall@10 | ndcg@10 | hit@10 | recall@50 | recall@100 | ndcg@100 | coverage@10 | "
             "coverage@100 | train s | ms/user | gate |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(r, key, spec=".4f"):
        return "" if r.get(key) is None else format(r[key], spec)

    for r in night["rows"]:
        d = r["details"]
        recall10 = f(r, "recall@10")
        if r["model"] == "pipeline":
            recall10 += f" ({d['retriever_order']['recall@10']:.4f})"
        gate = d.get("gate") or ""
        if d.get("registered_version"):
            gate += f", registered v{d['registered_version']}"
        lines.append(f"| {r['model']} | {recall10} | {f(r, 'ndcg@10')} | {f(r, 'hit@10')} | {f(r, 'recall@50')} | "
                     f"{f(r, 'recall@100')} | {f(r, 'ndcg@100')} | {f(r, 'coverage@10', '.3f')} | "
                     f"{f(r, 'coverage@100', '.3f')} | {f(r, 'train_seconds', '.2f')} | "
                     f"{f(r, 'retrieval_ms_per_user', '.3f')} | {gate} |")
    return "\n".join(lines) + "\n"


def run_staging_day(datasets: Sequence[str], retrievers: Sequence[str], epochs: int, rows_per_day: int,
                    movielens_run_date: str | None, movielens_window_days: int | None) -> list[dict[str, Any]]:
    """Protocol `staging_day` (benchmarks/retrieval_staging.py): one night per dataset, each in
    its own temporary RECLOOP_HOME, removed afterwards (Prefect: its default local mode)."""
    from datetime import date

    from benchmarks import retrieval_staging as staging

    nights = []
    movielens_root = Path(os.environ.get("RECLOOP_MOVIELENS_ROOT", Path(".recloop/data").resolve()))
    saved = dict(os.environ)
    for dataset in datasets:
        if dataset == "movielens_100k":
            kwargs = {}
            if movielens_run_date:
                kwargs["run_date"] = date.fromisoformat(movielens_run_date)
            if movielens_window_days:
                kwargs["window_days"] = movielens_window_days
            night = staging.movielens_night(**kwargs)
        else:
            night = staging.synthetic_night(rows_per_day=rows_per_day)
        with tempfile.TemporaryDirectory(prefix=f"recloop-staging-{dataset}-") as tmp:
            print(f"staging_day {dataset}: run date {night.run_date}, window {night.window_days} days", flush=True)
            nights.append(staging.run_night(night, Path(tmp), retrievers, epochs, movielens_root))
        os.environ.clear()
        os.environ.update(saved)
    return nights


def merged_result(previous: dict[str, Any] | None, random_part: dict[str, Any] | None,
                  staging_nights: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The JSON of this run: a protocol that was not run keeps the previous file's rows and
    fields. Each row is stored once: `rows` holds random_80_10_10's, and each night of
    `staging_day` its own dataset's."""
    previous = previous or {}
    if random_part is None:
        random_part = {k: v for k, v in previous.items() if k not in ("rows", "staging_day")}
        # files written before the staging rows were stored once repeat them in `rows`
        random_part["rows"] = [r for r in previous.get("rows", []) if r.get("protocol") == "random_80_10_10"]
    if staging_nights is None:
        staging_nights = previous.get("staging_day", [])
    return {**random_part,
            "staging_day": [{k: v for k, v in n.items() if k != "rows"} | {"rows": n["rows"]} for n in staging_nights]}


def full_markdown(result: dict[str, Any]) -> str:
    text = markdown(result) if result["rows"] else "# Retrieval\n"
    nights = result.get("staging_day", [])
    for night in nights:
        text += "\n" + staging_markdown(night)
    if nights:
        from benchmarks.retrieval_staging import NOTES as STAGING_NOTES

        text += "\nNotes on staging_day:\n\n" + "".join(f"- {n}\n" for n in STAGING_NOTES)
    return text


def run_random_split(args) -> dict[str, Any]:
    """Protocol `random_80_10_10`: recloop's retrievers and the peers on one split."""
    split = movielens_random_split(seed=args.seed)
    print(split.describe())
    rows: list[dict[str, Any]] = []
    side = movielens_side_info(split) if args.recloop else None
    for name, ranked in recloop_retrievers(split, args.recloop, threads=args.threads, seed=args.seed,
                                           side=side).items():
        rows.append(make_row(split, name, "recloop", ranked, ranked.details.pop("load")))
    specs: list[PeerSpec] = [p for p in PEERS if p.key in args.peers]
    if specs:
        site = ensure_peers(site_dir())
        with tempfile.TemporaryDirectory(prefix="recloop-retrieval-") as tmp:
            split_npz = write_split(split, Path(tmp) / "split.npz")
            for spec in specs:
                print(f"{spec.key} ({spec.model}) ...", flush=True)
                run = run_peer(spec, split_npz, site, Path(tmp), threads=args.threads, seed=args.seed, kmax=KMAX,
                               max_epochs=args.max_epochs)
                ranked = RankedLists(users=run.users, topk=run.topk, train_seconds=run.train_seconds,
                                     retrieval_seconds=run.retrieval_seconds, details=run.details)
                row = make_row(split, spec.model, run.implementation, ranked, (run.load_before, run.load_after))
                row["details"]["peer_model"] = spec.peer_model
                rows.append(row)
                print(f"  recall@10 {row['recall@10']:.4f} ndcg@10 {row['ndcg@10']:.4f} train {row['train_seconds']:.1f}s "
                      f"load {row['load_before'][0]:.1f}->{row['load_after'][0]:.1f}", flush=True)
    return {
        "benchmark": "retrieval", "split": split.describe(), "dataset": split.dataset, "protocol": split.protocol,
        "seed": args.seed, "threads": args.threads, "ks": list(KS), "max_epochs": args.max_epochs,
        "n_users": split.n_users, "n_items": split.n_items, "test_users": len(split.test_users()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "rows": rows, "comparisons": comparisons(rows), "notes": list(NOTES),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    keys = [p.key for p in PEERS]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS),
                    help="protocols to run; the others keep their rows from the existing JSON in --out")
    ap.add_argument("--peers", nargs="*", choices=keys, default=keys, help="peer models to run (none: --peers)")
    ap.add_argument("--recloop", nargs="*", default=list(RECLOOP_RETRIEVERS), help="recloop retrievers to run")
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument("--max-epochs", type=int, default=None, help="smoke runs: cap RecBole epochs / implicit BPR iterations")
    ap.add_argument("--staging-datasets", nargs="+", choices=STAGING_DATASETS, default=list(STAGING_DATASETS))
    ap.add_argument("--ranker-epochs", type=int, default=2, help="staging_day: the night's wide_deep epochs")
    ap.add_argument("--synthetic-rows-per-day", type=int, default=30_000)
    ap.add_argument("--movielens-run-date", default=None, help="staging_day: default 1998-03-31 (staging 1998-03-30)")
    ap.add_argument("--movielens-window-days", type=int, default=None, help="default: back to the data's first day")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    os.environ.setdefault("RECLOOP_HOME", str(Path(".recloop").resolve()))
    existing = args.out / "retrieval.json"
    previous = json.loads(existing.read_text()) if existing.exists() else None
    random_part = run_random_split(args) if "random_80_10_10" in args.protocols else None
    staging_nights = None
    if "staging_day" in args.protocols:
        staging_nights = run_staging_day(args.staging_datasets, args.recloop, args.ranker_epochs,
                                         args.synthetic_rows_per_day, args.movielens_run_date,
                                         args.movielens_window_days)
        kept = [n for n in (previous or {}).get("staging_day", []) if n["dataset"] not in args.staging_datasets]
        staging_nights = kept + staging_nights
    result = merged_result(previous, random_part, staging_nights)
    write_results(args.out, "retrieval", result, full_markdown(result))
    return result


if __name__ == "__main__":
    main()
