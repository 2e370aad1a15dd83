"""Train: one MLflow child run per architecture, the bundle logged inside it."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import mlflow
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from feature_store.errors import ParameterError
from feature_store.spec import DatasetSpec
from models import model_config
from models.trainer import TrainConfig, as_source, evaluate, fit, predict_proba
from tasks import faults, plots
from tasks import warm_start as warm
from tasks.bundle import log_bundle
from tasks.handoff import Candidate, Night, PreparedData, WarmSource
from tasks.progress import StageProgress


def check_architectures(names: list[str], hparams: dict[str, dict] | None) -> None:
    """Fail before any work on an unknown architecture or hyper-parameter (the error lists
    what exists)."""
    unknown = sorted(set(hparams or {}) - set(names))
    if unknown:
        raise ParameterError(f"hparams given for architectures not being trained: {unknown} (training {names})")
    for name in names:
        try:
            model_config(name, (hparams or {}).get(name))
        except ValueError as exc:
            raise ParameterError(str(exc)) from None


def flat_params(prefix: str, obj) -> dict[str, str]:
    """The same param keys on every child run: `hp.*` for the architecture, `train.*` for the trainer."""
    return {f"{prefix}.{k}": str(v) for k, v in dataclasses.asdict(obj).items()}


def train_candidate(
    arch: str,
    data: PreparedData,
    spec: DatasetSpec,
    train_config: TrainConfig,
    hparams: dict | None,
    night: Night,
    log: Callable[[str], None] = print,
    show_progress: bool = False,
    warm_source: WarmSource = warm.OFF_SOURCE,
) -> Candidate:
    """Build `arch` for tonight's schema (from the seed, then from the champion when
    `warm_source` has one that fits, see `tasks/warm_start.py`), train it and log it with its
    bundle in a child run of the night."""
    model, started = warm.build(arch, data.schema, hparams, train_config.seed, warm_source)  # reproducible nights
    n_params = sum(p.numel() for p in model.parameters())
    with mlflow.start_run(
        experiment_id=night.experiment_id, run_name=arch, parent_run_id=night.parent_run_id,
        tags={**night.tags, "arch": arch}
    ) as run:
        mlflow.log_params({
            "arch": arch,
            "n_params": n_params,
            "train_rows": as_source(data.train, 2).rows,
            "val_rows": as_source(data.val, 2).rows,
            **flat_params("hp", model.config),
            **flat_params("train", train_config),
        })
        # Where it starts, warm (the champion's quality on tonight's validation day) or cold:
        # every child run gets epoch 0 of its curves and the same warm_start.* keys.
        t0 = time.perf_counter()
        logloss, auc = evaluate(model, data.val)
        started = dataclasses.replace(started, initial_val_logloss=logloss, initial_val_auc=auc,
                                      seconds=started.seconds + time.perf_counter() - t0)
        warm.log_warm_start(warm_source.mode, started, [f.name for f in (*data.schema.categorical,
                                                                         *data.schema.crosses)])
        log(f"[{arch}] {warm.describe(started)}")

        def on_epoch(h: dict) -> None:
            mlflow.log_metrics(
                {"train_loss": h["train_loss"], "epoch_val_logloss": h["val_logloss"], "epoch_val_auc": h["val_auc"]},
                step=h["epoch"],
            )
            log(f"[{arch}] epoch {h['epoch']}: train_loss {h['train_loss']:.4f}  "
                f"val_logloss {h['val_logloss']:.4f}  val_auc {h['val_auc']:.4f}  ({h['seconds']:.1f}s)")
            if h["epoch"] == 1:
                faults.point("after_first_epoch")

        if train_config.processes > 1:
            log(f"[{arch}] training in {train_config.processes} processes (DDP), "
                f"{train_config.batch_size // train_config.processes} rows per process and step")
        progress = StageProgress(f"train {arch}", "samples", log=log, artifact=show_progress)
        try:
            result = fit(model, data.train, data.val, train_config, on_epoch=on_epoch, on_progress=progress.update,
                         on_rank_epoch=faults.rank_epoch)
        finally:
            progress.close()
        t0 = time.perf_counter()
        holdout_pred = predict_proba(model, data.holdout)
        infer_rows_per_s = len(holdout_pred) / max(time.perf_counter() - t0, 1e-9)
        mlflow.log_metrics({
            "val_auc": result.best_val_auc,
            "val_logloss": result.best_val_logloss,
            "best_epoch": result.best_epoch,
            "train_samples_per_s": result.train_samples_per_s,
            "infer_rows_per_s": infer_rows_per_s,
            **{f"train_steps_{t}_threads": n for t, n in result.steps_by_threads.items()},
        })
        fig = plots.training_curve_figure(result.history, f"{arch}: training")
        mlflow.log_figure(fig, "plots/training_curve.png")
        plots.close(fig)
        model_uri = log_bundle(model, data.preprocessor, spec, data.holdout_raw.head(5))
    return Candidate(arch, run.info.run_id, model_uri, model, result, n_params, holdout_pred, infer_rows_per_s,
                     started)


@task(name="train", task_run_name="train-{arch}", cache_policy=NO_CACHE)
def train_task(arch: str, data: PreparedData, spec: DatasetSpec, train_config: TrainConfig, hparams: dict | None,
               night: Night, warm_source: WarmSource = warm.OFF_SOURCE) -> Candidate:
    """Train one architecture in its own MLflow child run (warm-started when it can be)."""
    return train_candidate(arch, data, spec, train_config, hparams, night, log=get_run_logger().info,
                           show_progress=True, warm_source=warm_source)
