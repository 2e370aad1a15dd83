"""recloop vs DeepCTR-Torch on UCI Adult, side by side (a benchmark, not a test).

For `wide_deep`, `deepfm` and `dcn`, trains recloop's model and DeepCTR-Torch 0.3.0's
counterpart (`WDL`, `DeepFM`, `DCN`) on the same rows and reports test AUC, test logloss,
parameter count and training samples/s. Writes `benchmarks/results/deepctr_adult.json`
and `deepctr_adult.md`, and logs one MLflow run per (architecture, implementation) in the
experiment `bench-deepctr-adult` of the local store under $RECLOOP_HOME (default
`.recloop`). DeepCTR-Torch is installed on first use into $RECLOOP_HOME/bench-site, never
into the project venv (see `benchmarks.deepctr_torch_side`).

    python -m benchmarks.deepctr_compare [--epochs 5] [--threads 2] [--out DIR]
        [--archs wide_deep deepfm dcn] [--limit-rows N] [--skip-busy]   (N: smoke runs on a subsample)

Also measures, in the same run, each model's roofline (a plain forward + backward of its
matmuls at the same batch size), recloop's training beside one CPU-bound process per core
(the busy rows), and recloop's training split written to parquet and streamed back by the
night's loader (`tasks.loader.ParquetBatches`).

Fairness rules:
  * Same inputs. Adult's official split (`load_adult`: train 32,561, test 16,281); a seeded
    10% of the official train is the validation slice, the other 90% the training rows.
    `tasks.preprocess.prepare_frames` fits the spec's NVTabular workflow
    (`feature_store/specs/adult.yaml`) on the training rows only and transforms all three;
    both implementations get those tensors: each categorical id and hashed cross becomes a
    DeepCTR `SparseFeat` with the fitted cardinality, each continuous column a `DenseFeat`.
  * Same model sizes. Embedding dim 16, MLP (256, 128, 64) with ReLU and dropout 0.1, no
    batch norm; dcn: 3 cross layers, DeepCTR's 'vector' parameterization (DCN-V1).
    wide_deep: DeepCTR's linear part gets the categorical ids + crosses (recloop's
    WideLinear), its DNN the categorical embeddings + continuous values. deepfm: linear part
    over ids + crosses + continuous (recloop's linear term). dcn: no linear part (recloop's
    DCN has none). DeepCTR's L2 penalties (l2_reg_linear/embedding/dnn/cross) are all 0.
  * Same training. Batch 1024, the same number of epochs (default 5), Adam at lr 2e-3,
    binary cross-entropy, torch threads T (default 2), seed 0 for weights, batch order and
    dropout. Both validate after every epoch, stop after 2 epochs without a lower
    validation logloss and restore the best epoch's weights (recloop's trainer; for
    DeepCTR a callback doing the same). Test metrics are computed by recloop's
    `models.metrics` for both.
  * Training samples/s excludes evaluation for both: recloop's
    `TrainResult.train_samples_per_s` times only the epochs' batch loops; DeepCTR's is
    training rows x epochs run / (wall time of `model.fit` - time in the validation
    callback), so it includes DeepCTR's DataLoader collation, its way of feeding batches.

Residual differences (each implementation's own defaults, kept):
  * recloop trains its wide/linear weights (`WideLinear`: wide_deep's wide part, deepfm's
    linear term) at `wide_lr` 1e-2 (TrainConfig default); DeepCTR uses one lr, 2e-3.
  * Initialisation: recloop's embeddings N(0, 0.5^2) for wide_deep's deep part and
    N(0, 0.1^2) for deepfm/dcn, PyTorch's default for linear layers, zero wide weights;
    DeepCTR draws embeddings, linear weights and DNN weights from N(0, 1e-4^2).
  * deepfm: recloop makes each continuous column an FM field (value x vector, in the FM and,
    as a 16-d vector, in the MLP); DeepCTR's FM sees only the sparse fields and its DNN gets
    the raw continuous values.
  * DeepCTR sums the loss over the batch (Adam is nearly invariant to that scale); its
    inputs travel as one float32 matrix (ids < 2^24, exact).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmarks.report import write_results

RESULTS = Path(__file__).parent / "results"
EXPERIMENT = "bench-deepctr-adult"
ARCHS = ("wide_deep", "deepfm", "dcn")
SETUP = {
    "embedding_dim": 16,
    "hidden": (256, 128, 64),
    "dropout": 0.1,
    "n_cross_layers": 3,
    "batch_size": 1024,
    "lr": 2e-3,
    "wide_lr": 1e-2,  # recloop only: its TrainConfig default for WideLinear weights
    "patience": 2,
    "val_fraction": 0.1,
    "seed": 0,
}


def split_adult(val_fraction: float, seed: int, limit_rows: int | None) -> tuple[pd.DataFrame, ...]:
    """(train, val, test) raw frames: val is a seeded slice of the official train."""
    from feature_store.datasets.adult import load_adult

    train, test = load_adult()
    rng = np.random.default_rng(seed)
    if limit_rows is not None:
        train = train.iloc[np.sort(rng.permutation(len(train))[:limit_rows])]
        test = test.iloc[np.sort(rng.permutation(len(test))[:limit_rows])]
    order = rng.permutation(len(train))
    n_val = int(round(val_fraction * len(train)))
    val_rows, train_rows = np.sort(order[:n_val]), np.sort(order[n_val:])
    return (train.iloc[train_rows].reset_index(drop=True), train.iloc[val_rows].reset_index(drop=True),
            test.reset_index(drop=True))


def recloop_hparams(arch: str) -> dict[str, Any]:
    params = {k: SETUP[k] for k in ("embedding_dim", "hidden", "dropout")}
    if arch == "dcn":
        params["n_cross_layers"] = SETUP["n_cross_layers"]
    return params


def param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def holdout_metrics(labels: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from models.metrics import log_loss, roc_auc

    return {"test_auc": roc_auc(labels, p), "test_logloss": log_loss(labels, p)}


def streamed_split(split: Mapping[str, torch.Tensor], schema: Any, path: Path) -> Any:
    """`split` written to one parquet file in the trainer's layout, in row groups of the nightly
    size, read back by `tasks.loader.ParquetBatches` with the nightly shuffle buffer: as a night
    reads its transformed window."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.loader import ParquetBatches
    from tasks.settings import StreamConfig

    names = {key: [f"{key}_{i}" for i in range(split[key].shape[1])] for key in ("cat", "cont", "cross")}
    columns = {name: split[key][:, i].numpy() for key, keys in names.items() for i, name in enumerate(keys)}
    stream = StreamConfig()
    pq.write_table(pa.table({**columns, "label": split["label"].numpy()}), path, row_group_size=stream.row_group_rows)
    return ParquetBatches([path], names["cat"], names["cont"], names["cross"], "label", SETUP["batch_size"],
                          SETUP["seed"], stream.shuffle_row_groups)


def run_recloop(arch: str, data: Any, epochs: int, threads: int, precision: str = "fp32",
                streamed: Path | None = None) -> dict[str, Any]:
    """recloop's model from `build_model`, trained by `models.trainer.fit` (the nightly
    defaults: float32; `precision="bf16"` is the opt-in bfloat16 autocast), on the training
    tensors, or with `streamed` (a directory) on them written to parquet and streamed back
    (`streamed_split`)."""
    from models import build_model
    from models.trainer import TrainConfig, fit, predict_proba

    model = build_model(arch, data.schema, recloop_hparams(arch), seed=SETUP["seed"])
    config = TrainConfig(epochs=epochs, batch_size=SETUP["batch_size"], lr=SETUP["lr"],
                         wide_lr=SETUP["wide_lr"], patience=SETUP["patience"], seed=SETUP["seed"],
                         threads=threads, precision=precision)
    train = data.train if streamed is None else streamed_split(data.train, data.schema, streamed / f"{arch}.parquet")
    result = fit(model, train, data.val, config)
    p = predict_proba(model, data.holdout)
    name = "recloop" if precision == "fp32" else f"recloop ({precision}, opt-in)"
    return {
        "implementation": name if streamed is None else f"{name}, streamed from parquet",
        "precision": precision,
        **({"streamed": "tasks.loader.ParquetBatches, one file, nightly row groups and shuffle buffer"}
           if streamed is not None else {}),
        "optimizer": f"Adam lr {config.lr} (fused AdamW on dense parameters, RowAdam on tables with "
                     f"sparse gradients), WideLinear lr {config.wide_lr}",
        "params": param_count(model),
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "train_samples_per_s": result.train_samples_per_s,
        "history": result.history,
        **holdout_metrics(data.holdout_labels, p),
    }


def run_deepctr(arch: str, data: Any, epochs: int, threads: int, site: Path) -> dict[str, Any]:
    """DeepCTR-Torch's counterpart of `arch`, trained by its own `fit`."""
    from benchmarks import deepctr_torch_side as dc

    dc.ensure_deepctr_torch(site)
    columns = dc.feature_columns(data.schema, SETUP["embedding_dim"])
    model = dc.build(arch, columns, hidden=SETUP["hidden"], dropout=SETUP["dropout"],
                     n_cross_layers=SETUP["n_cross_layers"], seed=SETUP["seed"])
    validation = dc.EpochValidation(dc.model_inputs(data.val, data.schema), data.val["label"].numpy(),
                                    patience=SETUP["patience"])
    result = dc.fit(model, dc.model_inputs(data.train, data.schema), data.train["label"].numpy(),
                    validation, lr=SETUP["lr"], batch_size=SETUP["batch_size"], epochs=epochs,
                    seed=SETUP["seed"], threads=threads)
    p = dc.predict(model, dc.model_inputs(data.holdout, data.schema))
    return {
        "implementation": f"DeepCTR-Torch {dc.DEEPCTR_TORCH_VERSION} ({dc.DEEPCTR_CLASSES[arch]})",
        "optimizer": f"Adam lr {SETUP['lr']} on all parameters",
        "params": param_count(model),
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "train_samples_per_s": result.train_samples_per_s,
        "history": result.history,
        **holdout_metrics(data.holdout_labels, p),
    }


def busy_rows(data: Any, archs: list[str], epochs: int, threads: int) -> list[dict[str, Any]]:
    """recloop's training samples/s quiet and beside one CPU-bound Python loop per core
    (`train_speed.competing_load`, started and stopped here), each run in a fresh process (the
    OpenMP spin count is read when torch loads): with recloop's GOMP_SPINCOUNT, and for
    wide_deep also with libgomp's default, the setting before this change."""
    import tempfile

    from benchmarks.train_speed import LIBGOMP_DEFAULT_SPIN, quiet_and_busy, save_payload

    cases = [(arch, os.environ.get("GOMP_SPINCOUNT", "")) for arch in archs]
    if "wide_deep" in archs:
        cases.append(("wide_deep", LIBGOMP_DEFAULT_SPIN))
    config = {"epochs": epochs, "batch_size": SETUP["batch_size"], "lr": SETUP["lr"], "wide_lr": SETUP["wide_lr"],
              "patience": SETUP["patience"], "seed": SETUP["seed"], "threads": threads}
    rows = []
    with tempfile.TemporaryDirectory(prefix="recloop-busy-") as tmp:
        for arch, spin in cases:
            payload = save_payload(Path(tmp) / f"{arch}.pt", arch, data, recloop_hparams(arch), config)
            rows.append({"model": arch, **quiet_and_busy(payload, spin, threads)})
            print(f"{arch:10s} GOMP_SPINCOUNT={spin:>7s} quiet {rows[-1]['quiet_samples_per_s']:,.0f}  busy "
                  f"{rows[-1]['busy_samples_per_s']:,.0f} samples/s ({rows[-1]['busy_share']:.0%})", flush=True)
    return rows


def log_runs(rows: list[dict[str, Any]], common: Mapping[str, Any]) -> str:
    """One MLflow run per row in EXPERIMENT on the configured store; returns the tracking URI."""
    import mlflow

    from tasks.settings import get_settings
    from tasks.tracking import artifact_location, code_version, configure

    settings = get_settings()
    client = configure(settings)
    exp = client.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp else client.create_experiment(
        EXPERIMENT, artifact_location=artifact_location(settings), tags={"dataset": "adult"})
    for row in rows:
        tags = {"benchmark": "deepctr_compare", "code_version": code_version(),
                "implementation": row["implementation"]}
        with mlflow.start_run(experiment_id=exp_id, run_name=f"{row['model']} / {row['implementation']}",
                              tags=tags):
            mlflow.log_params({**common, "arch": row["model"], "optimizer": row["optimizer"]})
            mlflow.log_metrics({k: float(row[k]) for k in
                                ("test_auc", "test_logloss", "train_samples_per_s", "params",
                                 "epochs_run", "best_epoch")})
            for h in row["history"]:
                mlflow.log_metrics({"val_auc": h["val_auc"], "val_logloss": h["val_logloss"]},
                                   step=int(h["epoch"]))
    return settings.resolved_tracking_uri


def markdown(result: Mapping[str, Any]) -> str:
    from benchmarks.train_speed import one_thread_steps

    s = result["setup"]
    mlp = "-".join(str(h) for h in s["hidden"])
    lines = [f"# recloop vs DeepCTR-Torch on Adult ({result['rows']['train']:,} train / "
             f"{result['rows']['val']:,} val / {result['rows']['test']:,} test rows)", "",
             "| model | implementation | test AUC | test logloss | params | training samples/s "
             "| epochs (best) | batch size | embedding dim | MLP |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(f"| {r['model']} | {r['implementation']} | {r['test_auc']:.4f} | {r['test_logloss']:.4f} "
                     f"| {r['params']:,} | {r['train_samples_per_s']:,.0f} | {r['epochs_run']} of "
                     f"{result['epochs']} ({r['best_epoch']}) | {s['batch_size']} | {s['embedding_dim']} | {mlp} |")
    lines += ["", "## Speed-up and roofline", "",
              "Roofline: a plain forward + backward of each model's matmuls (every `nn.Linear`, 6 in out "
              "FLOPs per sample) at the same batch size, in the precision of the run (float32, or "
              "bfloat16 for the opt-in autocast row), measured in this run (`benchmarks.train_speed.roofline`) "
              "by torch's own product (`x @ W^T`: MKL's sgemm in float32, what DeepCTR-Torch's layers "
              "run) and by oneDNN (`models.kernels.linear`), the faster of the two.", "",
              "| model | recloop | recloop samples/s | DeepCTR-Torch samples/s | speed-up | roofline samples/s "
              "| of which torch's product | matmul GFLOP/s at the roofline | recloop share of the roofline |",
              "|---|---|---|---|---|---|---|---|---|"]
    for mine in (r for r in result["runs"] if "precision" in r and "streamed" not in r):
        peer = next((r for r in result["runs"] if r["model"] == mine["model"] and "precision" not in r), None)
        peer_sps = peer["train_samples_per_s"] if peer else float("nan")
        roof = next(r for r in result["rooflines"] if r["model"] == mine["model"] and r["precision"] == mine["precision"])
        lines.append(f"| {mine['model']} | {mine['precision']} | {mine['train_samples_per_s']:,.0f} | {peer_sps:,.0f} "
                     f"| x{mine['train_samples_per_s'] / peer_sps:.2f} | {roof['samples_per_s']:,.0f} "
                     f"| {roof.get('torch_product_samples_per_s', float('nan')):,.0f} "
                     f"| {roof['gflops']:.0f} | {mine['roofline_share']:.0%} |")
    streamed = [r for r in result["runs"] if "streamed" in r]
    if streamed:
        lines += ["", "## Streamed from parquet", "",
                  "recloop's training split written to parquet and read back by the night's loader "
                  "(`tasks.loader.ParquetBatches`: row groups of 65,536 rows, a shuffle buffer of 32, the "
                  "next buffer read in a background thread), against the same training from tensors in "
                  "memory in this run.", "",
                  "| model | streamed samples/s | in memory samples/s | streamed / in memory | test AUC streamed |",
                  "|---|---|---|---|---|"]
        for r in streamed:
            mem = next(m for m in result["runs"] if m["model"] == r["model"] and m.get("precision") == "fp32"
                       and "streamed" not in m)
            lines.append(f"| {r['model']} | {r['train_samples_per_s']:,.0f} | {mem['train_samples_per_s']:,.0f} "
                         f"| {r['train_samples_per_s'] / mem['train_samples_per_s']:.0%} | {r['test_auc']:.4f} |")
    if result.get("busy"):
        lines += ["", "## A busy machine", "",
                  "recloop's training quiet and beside one CPU-bound process per core (a Python loop per "
                  "core, started and stopped by the benchmark), each run in its own process.", "",
                  "| model | GOMP_SPINCOUNT | quiet samples/s | busy samples/s | busy / quiet | busy steps at 1 "
                  "thread | load at start (quiet, busy) |", "|---|---|---|---|---|---|---|"]
        for r in result["busy"]:
            lines.append(f"| {r['model']} | {r['gomp_spincount']} | {r['quiet_samples_per_s']:,.0f} "
                         f"| {r['busy_samples_per_s']:,.0f} | {r['busy_share']:.0%} "
                         f"| {one_thread_steps(r.get('busy_steps_by_threads'))} "
                         f"| {r['load_at_quiet_start']:.1f}, {r['load_at_busy_start']:.1f} |")
    optimizers = sorted({f"{r['implementation'].split(' (')[0]}: {r['optimizer']}" for r in result["runs"]})
    m = result["machine"]
    lines += ["", f"Optimizers: {'; '.join(optimizers)}.", "",
              f"torch {m['torch']} with {result['threads']} threads, {m['cpus']} CPUs ({m.get('cpu', '?')}, "
              f"{m['platform']}; recloop's dropout kernel: {m.get('kernels', '?')}), "
              f"1-min load average at start {m.get('load_average_at_start', float('nan')):.1f}. Throughput is "
              "wall-clock: with as many torch threads as busy cores, OpenMP threads wait on each other "
              "and samples/s can drop by an order of magnitude for both implementations.", ""]
    doc = __doc__.split("Fairness rules:", 1)[1]
    lines += ["## Fairness rules", "", "Fairness rules:" + doc.rstrip(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5, help="Epochs for both implementations.")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for both.")
    ap.add_argument("--out", type=Path, default=RESULTS, help="Directory for the JSON and markdown.")
    ap.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS))
    ap.add_argument("--limit-rows", type=int, default=None,
                    help="Smoke runs: subsample the official train and test to N rows each.")
    ap.add_argument("--skip-busy", action="store_true", help="Leave out the busy-machine rows.")
    args = ap.parse_args(argv)
    if args.epochs < 1 or args.threads < 1:
        ap.error("--epochs and --threads must be >= 1")

    from benchmarks.train_speed import cpu_model, roofline
    from feature_store.spec import load_spec
    from flows.cli import _quiet_libraries
    from models import build_model, kernels
    from tasks.preprocess import prepare_frames
    from tasks.settings import get_settings

    _quiet_libraries()
    torch.set_num_threads(args.threads)
    load_at_start = os.getloadavg()[0]  # T threads on busy cores spin-wait: samples/s collapses
    train_raw, val_raw, test_raw = split_adult(SETUP["val_fraction"], SETUP["seed"], args.limit_rows)
    data = prepare_frames(load_spec("adult"), train_raw, val_raw, test_raw)
    site = get_settings().home / "bench-site"
    # The rooflines first: they also warm the process up (MKL, oneDNN, the allocator) for the
    # first run as for the later ones.
    rooflines = {(arch, precision): roofline(build_model(arch, data.schema, recloop_hparams(arch), seed=SETUP["seed"]),
                                             SETUP["batch_size"], dtype)
                 for arch in args.archs for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    runs = []
    with tempfile.TemporaryDirectory(prefix="recloop-streamed-") as tmp:
        for arch in args.archs:
            for run in (run_recloop, partial(run_deepctr, site=site), partial(run_recloop, precision="bf16"),
                        partial(run_recloop, streamed=Path(tmp))):
                t0 = time.perf_counter()
                row = {"model": arch, **run(arch, data, args.epochs, args.threads)}
                row["wall_seconds"] = time.perf_counter() - t0
                print(f"{arch:10s} {row['implementation']:32s} test AUC {row['test_auc']:.4f} "
                      f"logloss {row['test_logloss']:.4f} {row['train_samples_per_s']:,.0f} samples/s", flush=True)
                runs.append(row)

    for row in (r for r in runs if "streamed" not in r):
        roof = rooflines[row["model"], row.get("precision", "fp32")]
        row["roofline_samples_per_s"] = roof["samples_per_s"]
        row["roofline_share"] = row["train_samples_per_s"] / row["roofline_samples_per_s"]
    busy = [] if args.skip_busy else busy_rows(data, args.archs, args.epochs, args.threads)
    result = {
        "benchmark": "recloop vs DeepCTR-Torch on UCI Adult",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "torch": torch.__version__,
                    "numpy": np.__version__, "pandas": pd.__version__, "load_average_at_start": load_at_start,
                    "cpu": cpu_model(), "kernels": kernels.kernel_in_use()},
        "epochs": args.epochs,
        "threads": args.threads,
        "limit_rows": args.limit_rows,
        "rows": {"train": len(train_raw), "val": len(val_raw), "test": len(test_raw)},
        "setup": {**SETUP, "hidden": list(SETUP["hidden"])},
        "schema": data.schema.to_layout(),
        "runs": runs,
        "rooflines": [{"model": a, "precision": prec, **r} for (a, prec), r in rooflines.items()],
        "busy": busy,
    }
    common = {"epochs": args.epochs, "threads": args.threads, "limit_rows": args.limit_rows,
              "rows_train": len(train_raw), "rows_val": len(val_raw), "rows_test": len(test_raw),
              **{k: v for k, v in result["setup"].items()}}
    result["tracking_uri"] = log_runs(runs, common)
    write_results(args.out, "deepctr_adult", result, markdown(result))
    return result


if __name__ == "__main__":
    main()
