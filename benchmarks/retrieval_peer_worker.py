"""One peer model in its own process, started by `benchmarks.retrieval_peers.run_peer`.

    python benchmarks/retrieval_peer_worker.py JOB.json

It imports nothing from recloop: only numpy, and the peer (RecBole 1.2.1 or implicit 0.7.3)
from the benchmark site dir named in the job, so the peer's imports, global seeds and
thread settings never reach the benchmark process. It reads the split (`split.npz`: dense
(user, item) pairs train / valid / test, n_users, n_items), fits, and writes to the job's
out dir:
  topk.npz     users (U,) dense test users ascending, topk (U, kmax) dense item ids ranked
               best first, train and valid items excluded, -1 padded
  result.json  train_seconds (model construction + fit, measured here), retrieval_seconds
               (top-K for every test user), the peer's own test metrics when it reports them,
               epochs run / best epoch, the hyper-parameters used

RecBole 1.2.1 on this venv (torch 2.13 CPU, numpy 1.24) needs, all done in this process only:
  * `torch.utils.tensorboard` stubbed: `recbole.utils` imports SummaryWriter at import time
    and every Trainer opens one; the real module needs the `tensorboard` package (and its
    protobuf/grpc), which the venv lacks. The stub's writer does nothing.
  * `torch.load` defaulting to weights_only=False: torch >= 2.6 loads weights only by default,
    and RecBole's checkpoint (written a moment earlier by this process, in its temp dir)
    pickles the whole Config, so `Trainer.evaluate(load_best_model=True)` fails without it.
  * `scipy.sparse.dok_matrix._update` restored (LightGCN builds its adjacency matrix with it;
    scipy >= 1.12's dok_matrix is no longer a dict subclass and has no `_update`): the stand-in
    does what the old one did, a dict update of the entries.
  * numpy's removed aliases (np.float, np.int, np.bool ...): RecBole's own
    `Config.compatibility_settings` restores them; nothing to do here.
  * `recbole.quick_start` is never imported: it imports `ray` (and, through `get_flops`,
    `thop`); the worker drives Config / create_dataset / data_preparation / Trainer itself,
    in the same order as `run_recbole`.
"""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path

import numpy as np

DATASET_TOKEN = "ml100k"  # the name RecBole sees; its atomic files are <dir>/ml100k/ml100k.<part>.inter


def _group(pairs: np.ndarray, users: np.ndarray) -> list[np.ndarray]:
    starts = np.searchsorted(pairs[:, 0], users, side="left")
    ends = np.searchsorted(pairs[:, 0], users, side="right")
    return [pairs[s:e, 1] for s, e in zip(starts, ends, strict=True)]


def _sorted(pairs: np.ndarray) -> np.ndarray:
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


# ---------------------------------------------------------------------------------------- RecBole


def _patch_for_recbole() -> None:
    import functools

    import torch

    class SummaryWriter:  # no-op stand-in for torch.utils.tensorboard.SummaryWriter
        def __init__(self, *args, **kwargs):
            pass

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    stub = types.ModuleType("torch.utils.tensorboard")
    stub.SummaryWriter = SummaryWriter
    sys.modules["torch.utils.tensorboard"] = stub
    torch.load = functools.partial(torch.load, weights_only=False)  # our own checkpoint, same process

    import scipy.sparse as sp

    if not hasattr(sp.dok_matrix, "_update"):
        def _update(self, entries):
            self._dict.update({(int(r), int(c)): v for (r, c), v in entries.items()})

        sp.dok_matrix._update = _update


def write_atomic_files(directory: Path, train: np.ndarray, valid: np.ndarray, test: np.ndarray) -> None:
    """RecBole atomic files: ml100k.{train,valid,test}.inter, dense ids as tokens."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, pairs in (("train", train), ("valid", valid), ("test", test)):
        lines = ["user_id:token\titem_id:token"] + [f"{u}\t{i}" for u, i in pairs.tolist()]
        (directory / f"{DATASET_TOKEN}.{name}.inter").write_text("\n".join(lines) + "\n")


def run_recbole(job: dict, data: dict, out: Path) -> dict:
    import torch

    _patch_for_recbole()
    torch.set_num_threads(job["threads"])
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    atomic = out / "atomic"
    write_atomic_files(atomic / DATASET_TOKEN, data["train"], data["valid"], data["test"])
    config_dict = {
        "data_path": str(atomic),
        "benchmark_filename": ["train", "valid", "test"],  # our split, not RecBole's own
        "load_col": {"inter": ["user_id", "item_id"]},
        "checkpoint_dir": str(out / "saved"),
        "use_gpu": False,
        "gpu_id": "",
        "seed": job["seed"],
        "show_progress": False,
        "metrics": ["Recall", "NDCG", "Hit", "MRR"],
        "topk": [10, 50, 100],
        "metric_decimal_place": 6,  # display rounding only (default 4): for the cross-check
        **job.get("config", {}),
    }
    config = Config(model=job["model"], dataset=DATASET_TOKEN, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)  # log/<model>/...log under the cwd: the job's out dir
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])

    start = time.perf_counter()
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])  # ItemKNN fits here
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    valid_seconds = [0.0]
    valid_epoch = trainer._valid_epoch

    def timed_valid_epoch(*args, **kwargs):
        t = time.perf_counter()
        try:
            return valid_epoch(*args, **kwargs)
        finally:
            valid_seconds[0] += time.perf_counter() - t

    trainer._valid_epoch = timed_valid_epoch
    best_valid_score, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    train_seconds = time.perf_counter() - start
    own = trainer.evaluate(test_data, load_best_model=True, show_progress=False)

    # Top-K with RecBole's own full-sort scoring and masking (history = train + valid, [PAD] = -inf).
    uid_field, iid_field = dataset.uid_field, dataset.iid_field
    user_token = dataset.field2id_token[uid_field]
    item_token = np.array([int(t) if t != "[PAD]" else -1 for t in dataset.field2id_token[iid_field]])
    kmax = job["kmax"]
    users, tops = [], []
    start = time.perf_counter()
    with torch.no_grad():
        for batched in test_data:
            interaction, scores, _, _ = trainer._full_sort_batch_eval(batched)
            top = torch.topk(scores, kmax, dim=-1)
            ranked = np.where(np.isfinite(top.values.numpy()), item_token[top.indices.numpy()], -1)
            tops.append(ranked)
            users.append(np.array([int(user_token[u]) for u in interaction[uid_field].numpy()]))
    retrieval_seconds = time.perf_counter() - start
    users_arr, top_arr = np.concatenate(users), np.concatenate(tops)
    order = np.argsort(users_arr)
    np.savez(out / "topk.npz", users=users_arr[order], topk=top_arr[order])
    epochs_run = len(trainer.train_loss_dict)
    hyper = {k: config[k] for k in ("embedding_size", "n_layers", "reg_weight", "k", "shrink", "learning_rate",
                                   "train_batch_size", "epochs", "stopping_step", "valid_metric",
                                   "train_neg_sample_args") if config[k] is not None}
    return {
        "train_seconds": train_seconds,
        "train_seconds_without_validation": train_seconds - valid_seconds[0],
        "retrieval_seconds": retrieval_seconds,
        "own_test_metrics": {k: float(v) for k, v in own.items()},
        "best_valid_score": float(best_valid_score),
        "epochs_run": epochs_run,
        "best_epoch": epochs_run - trainer.cur_step,  # 1-based; cur_step = epochs since the best
        "hyperparameters": hyper,
        "n_items_seen_by_peer": int(dataset.item_num - 1),  # minus [PAD]
        "n_users_seen_by_peer": int(dataset.user_num - 1),
    }


# ---------------------------------------------------------------------------------------- implicit


def run_implicit(job: dict, data: dict, out: Path) -> dict:
    import scipy.sparse as sp
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    from implicit.nearest_neighbours import CosineRecommender

    n_users, n_items = int(data["n_users"]), int(data["n_items"])
    train, valid, test = data["train"], data["valid"], data["test"]
    user_items = sp.csr_matrix((np.ones(len(train), dtype=np.float32), (train[:, 0], train[:, 1])),
                               shape=(n_users, n_items))
    params = dict(job.get("config", {}))
    threads = job["threads"]
    if job["model"] == "CosineRecommender":
        model = CosineRecommender(num_threads=threads, **params)
    elif job["model"] == "BayesianPersonalizedRanking":
        model = BayesianPersonalizedRanking(num_threads=threads, random_state=job["seed"], **params)
    else:
        raise ValueError(f"unknown implicit model {job['model']!r}")
    start = time.perf_counter()
    model.fit(user_items, show_progress=False)
    train_seconds = time.perf_counter() - start

    users = np.unique(test[:, 0])
    kmax = job["kmax"]
    excluded = _group(_sorted(np.concatenate([train, valid])), users)
    extra = max((len(v) for v in excluded), default=0)
    start = time.perf_counter()
    # Scored from train only (valid is not an input, as for RecBole). implicit's item-kNN scores
    # only the neighbours of the user's items and fills the rest of N with zero-score items,
    # already-liked ones included (user 16 here: 90 scored items, then its 10 train items at
    # score 0). So we ask for `extra` more and drop every train and valid item ourselves.
    ids, _ = model.recommend(users, user_items[users], N=min(kmax + extra, n_items),
                             filter_already_liked_items=True)
    topk = np.full((len(users), kmax), -1, dtype=np.int64)
    for row, (ranked, drop) in enumerate(zip(ids, excluded, strict=True)):
        keep = ranked[(ranked >= 0) & ~np.isin(ranked, drop)][:kmax]
        topk[row, : len(keep)] = keep
    retrieval_seconds = time.perf_counter() - start
    np.savez(out / "topk.npz", users=users, topk=topk)
    hyper = {k: getattr(model, k) for k in ("K", "factors", "learning_rate", "regularization", "iterations",
                                             "verify_negative_samples") if hasattr(model, k)}
    if getattr(model, "item_factors", None) is not None:
        hyper["item_factors_shape"] = list(np.asarray(model.item_factors).shape)  # factors + 1 bias column
    return {"train_seconds": train_seconds, "retrieval_seconds": retrieval_seconds,
            "own_test_metrics": None, "epochs_run": hyper.get("iterations"), "hyperparameters": hyper}


RUNNERS = {"recbole": run_recbole, "implicit": run_implicit}


def main(argv: list[str] | None = None) -> None:
    job_path = Path((argv if argv is not None else sys.argv[1:])[0])
    job = json.loads(job_path.read_text())
    sys.path.append(job["site"])  # appended: nothing in the site dir may shadow the venv
    out = Path(job["out"])
    with np.load(job["split"]) as f:
        data = {k: f[k] for k in f.files}
    result = RUNNERS[job["peer"]](job, data, out)
    module = __import__(job["peer"])
    result["version"] = getattr(module, "__version__", "?")
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
