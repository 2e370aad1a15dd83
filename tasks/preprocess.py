"""Preprocess: fit the spec's NVTabular workflow on the training days only, on Dask, and
write every split, transformed, to parquet in the night's work directory; the trainer and the
scorers stream batches from there. No split is ever held whole in memory."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from feature_store import partitions
from feature_store.cluster import DaskConfig, dask_client, raw_files
from feature_store.drift import DriftPolicy, FeatureColumns, ProfileStat, profile_parts
from feature_store.spec import DatasetSpec
from feature_store.workflow import Preprocessor
from models.schema import InputSchema
from models.trainer import TrainConfig
from tasks.features import to_batch
from tasks.handoff import FrameDay, PreparedData, RawWindow
from tasks.loader import ParquetBatches
from tasks.progress import StageProgress
from tasks.settings import StreamConfig


def parquet_parts(window: RawWindow, days: list, out_dir: Path) -> list[Path]:
    """The days' part files as parquet: a CSV part is converted once into `out_dir` (Dask
    reads one format per dataset); parquet parts are read where they lie."""
    files = []
    for day in days:
        for path in window.files(day):
            if path.suffix != ".csv":
                files.append(path)
                continue
            target = out_dir / f"day={day}" / f"{path.stem}.parquet"
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                partitions.read_part(path).to_parquet(target, index=False)
            files.append(target)
    return files


def prepare(window: RawWindow, spec: DatasetSpec, work_dir: Path, stream: StreamConfig = StreamConfig(),
            dask: DaskConfig = DaskConfig(), train: TrainConfig = TrainConfig(),
            log: Callable[[str], None] = print, drift: DriftPolicy | None = None) -> PreparedData:
    """The loop's split: fit on the window's training days, validate on D-1, stage on D.
    Batches are cut with `train.batch_size` and shuffled with `train.seed`.

    With `drift` (not mode `off`): the drift profile of the fitted days, computed by the fit's
    own tasks on the chunks it reads anyway, and the staging day's on the fitted days' bins
    (one more read of that day)."""
    profile = ProfileStat(FeatureColumns.from_spec(spec)) if drift is not None and drift.mode != "off" else None
    columns = [*spec.feature_columns, spec.label]
    days = {"fit": window.fit_days, "val": [window.val_day], "staging": [window.holdout_day]}
    files = {name: parquet_parts(window, d, work_dir / "raw") for name, d in days.items()}
    dask = dask if dask.address or dask.local_directory else dataclasses.replace(dask, local_directory=work_dir / "dask")
    with dask_client(dask) as client:
        log(f"Dask: {'scheduler ' + dask.address if dask.address else 'local cluster'}, "
            f"{len(client.scheduler_info().get('workers', {}))} worker(s); dashboard {client.dashboard_link}")
        t0 = time.perf_counter()
        progress = StageProgress("preprocess: fit", "rows", log=log)
        pre = Preprocessor.fit_files(spec, raw_files(files["fit"], columns, stream.part_size), work_dir / "vocab",
                                     on_progress=progress.update, side=[profile] if profile else ())
        progress.close()
        fit_seconds = time.perf_counter() - t0
        staging_profile = None
        if profile is not None:
            t2 = time.perf_counter()
            staging_raw = raw_files(files["staging"], profile.input_columns, stream.part_size)
            bins = profile.profile.bins(drift.bins)
            staging_profile = profile_parts(staging_raw.parts(), profile.columns, bins).compute()
            log(f"drift profiles: staging day summarized in {time.perf_counter() - t2:.2f} s "
                "(the training window's came with the fit)")
        t1 = time.perf_counter()
        raw = {name: raw_files(f, columns, stream.part_size) for name, f in files.items()}
        total = sum(r.rows for r in raw.values())
        progress, done = StageProgress("preprocess: transform", "rows", log=log), 0
        splits = {}
        for name, source in raw.items():  # one bar over the three splits
            splits[name] = pre.transform_to_parquet(source, work_dir / "transformed" / name, spec.label,
                                                    stream.row_group_rows,
                                                    on_progress=lambda d, _t, base=done: progress.update(base + d, total))
            done += source.rows
        progress.close()
        transform_seconds = time.perf_counter() - t1
        dashboard = client.dashboard_link

    schema = InputSchema.from_layout(pre.layout)

    def source(name: str) -> ParquetBatches:
        return ParquetBatches.for_schema(splits[name].files, schema, spec.label, batch_size=train.batch_size,
                                         seed=train.seed, shuffle_row_groups=stream.shuffle_row_groups)

    staging = window.day(window.holdout_day, chunk_rows=stream.chunk_rows)
    return PreparedData(
        preprocessor=pre,
        schema=schema,
        train=source("fit"),
        val=source("val"),
        holdout=source("staging"),
        holdout_raw=staging,
        holdout_labels=staging.column(spec.label),
        fit_seconds=fit_seconds,
        transform_rows_per_s=sum(s.rows for s in splits.values()) / max(transform_seconds, 1e-9),
        fit_rows_per_s=splits["fit"].rows / max(fit_seconds, 1e-9),
        dask_dashboard=dashboard,
        train_profile=profile.profile if profile else None,
        staging_profile=staging_profile,
    )


def prepare_frames(
    spec: DatasetSpec, train_raw: pd.DataFrame, val_raw: pd.DataFrame, holdout_raw: pd.DataFrame
) -> PreparedData:
    """The same split from frames already in memory (benchmarks and tests on datasets that are
    not day-partitioned): fit on `train_raw` only, transform all three into whole-split tensor
    dicts (which `fit` and `predict_proba` take as they are)."""
    t0 = time.perf_counter()
    preprocessor = Preprocessor.fit(spec, train_raw)
    fit_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    batches = [to_batch(preprocessor.transform(df), df[spec.label].to_numpy()) for df in (train_raw, val_raw, holdout_raw)]
    rows = len(train_raw) + len(val_raw) + len(holdout_raw)
    transform_rows_per_s = rows / max(time.perf_counter() - t1, 1e-9)
    return PreparedData(
        preprocessor=preprocessor,
        schema=InputSchema.from_layout(preprocessor.layout),
        train=batches[0],
        val=batches[1],
        holdout=batches[2],
        holdout_raw=FrameDay(holdout_raw.reset_index(drop=True)),
        holdout_labels=holdout_raw[spec.label].to_numpy(dtype=np.float64),
        fit_seconds=fit_seconds,
        transform_rows_per_s=transform_rows_per_s,
        fit_rows_per_s=len(train_raw) / max(fit_seconds, 1e-9),
    )


@task(name="preprocess", cache_policy=NO_CACHE)
def preprocess_task(window: RawWindow, spec: DatasetSpec, work_dir: Path, stream: StreamConfig, dask: DaskConfig,
                    train: TrainConfig, drift: DriftPolicy | None = None) -> PreparedData:
    """Fit the NVTabular workflow on the training days and write every split to parquet."""
    from prefect import get_run_logger

    return prepare(window, spec, work_dir, stream, dask, train, log=get_run_logger().info, drift=drift)
