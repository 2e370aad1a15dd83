"""The NVTabular preprocessing built from a dataset spec, and the fitted `Preprocessor`.

One `nvt.Workflow` holds every feature transform, the feature crosses included, so
training and serving apply exactly the same code. The workflow is fitted on the training
window only and saved inside each model version next to `layout.json`, the input layout
the models are built from (`models.schema.InputSchema.from_layout`).

Our own ops do what NVTabular 23.08's do not: `feature_store/stable_ops.py` hashes values only
(on CPU `HashedCross` and `HashBucket` mix the pandas index into the hash) and declares the id
domain of crosses and buckets; `feature_store/categorify.py` `FastCategorify` gives
`Categorify`'s ids many times faster on CPU (NVTabular 1289) without its null bugs;
`feature_store/continuous.py` `ContinuousChain` is fill >> clip >> log >> normalize with its
statistics in one pass. `_prepare` keeps the workarounds for workflows fitted with
`categorify="nvtabular"` (`Categorify` places null ids by index *label* and fails on an
all-null batch).

Fitting reads the training data once (`fit_workflow`); transforming runs the fitted workflow
compiled into numpy steps (`feature_store/compiled.py`, proven equal to the workflow), so
neither pays merlin's per-node copies. Two ways in: `Preprocessor.fit(spec, frame)` +
`transform(frame)` in memory (serving, small data), or `Preprocessor.fit_files(spec, raw,
work_dir)` + `transform_to_parquet(raw, out_dir, label, row_group_rows)` over part files in
chunks of row groups (`feature_store.cluster.raw_files`) on Dask, which never holds a whole
window. Every chunk goes through `transform_columns`, so both give the same ids.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import operator
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import dask
import numpy as np
import nvtabular as nvt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from merlin.dag import iter_nodes
from merlin.dag.ops.selection import SelectionOp
from merlin.dag.ops.stat_operator import StatOperator
from merlin.io import Dataset
from nvtabular import ops

from feature_store.categorify import FastCategorify
from feature_store.cluster import RawFiles, compute_tracked
from feature_store.compiled import CompiledTransform, Unsupported
from feature_store.continuous import ContinuousChain, Steps
from feature_store.errors import DataError
from feature_store.spec import DatasetSpec
from feature_store.stable_ops import DomainBucketize, StableHashBucket, StableHashedCross  # noqa: F401 (bundles pickled them from here)

Progress = Callable[[int, int], None]  # (done, total)
Reader = Callable[[list[str]], list[Any]]  # columns -> one lazy frame per chunk
LAYOUT_FILE = "layout.json"
WORKFLOW_DIR = "workflow"
_TRANSFORM_SOURCE = "preprocessor input"
_LAYOUT_KEYS = ("categorical", "continuous", "crosses", "user_fields", "item_fields")
CATEGORIFY_NULL_ID = 1  # Categorify reserves 0 padding, 1 null, 2 out-of-vocabulary
CATEGORIFY_OOV_ID = 2


def select_device() -> str:
    """'gpu' when cuDF imports and a GPU is visible, else 'cpu'. The only place that decides:
    hashed ids differ between the two, so the device is recorded with every fitted workflow."""
    try:
        from merlin.core.compat import HAS_GPU, cudf
    except Exception:  # a broken CUDA stack must not stop a CPU run
        return "cpu"
    return "gpu" if (cudf is not None and HAS_GPU) else "cpu"


@dataclass(frozen=True)
class OutputNames:
    """The workflow's output columns, grouped the way the models consume them."""

    categorical: tuple[str, ...]
    continuous: tuple[str, ...]
    crosses: tuple[str, ...]


def output_names(spec: DatasetSpec) -> OutputNames:
    """Categorical outputs: the spec categoricals, the bucketized continuous columns, then the
    bucketized columns derived from a continuous one."""
    return OutputNames(
        categorical=tuple(
            [c.name for c in spec.categorical]
            + [c.name for c in spec.continuous if c.bucketize is not None]
            + [b.name for b in spec.bucketized]
        ),
        continuous=tuple(c.name for c in spec.continuous if c.bucketize is None),
        crosses=tuple(x.name for x in spec.crosses),
    )


def build_workflow(
    spec: DatasetSpec, out_path: str | Path | None = None, categorify: str = "fast"
) -> nvt.Workflow:
    """The unfitted `nvt.Workflow` for a spec: features and crosses only, never the label
    (serving has no label). `out_path` is where Categorify writes its vocabularies at fit.
    `categorify="nvtabular"` uses `ops.Categorify` (same ids, several times slower on CPU;
    kept for the equality tests and the benchmark's baseline)."""
    cat_kwargs = {} if out_path is None else {"out_path": str(out_path)}
    outputs = []
    thresholds: dict[str, int] = {}
    for col in spec.categorical:
        threshold = col.freq_threshold if col.freq_threshold > 1 else 0
        if col.hash_buckets is not None:
            outputs.append([col.name] >> StableHashBucket(col.hash_buckets))
        elif categorify == "nvtabular":
            outputs.append([col.name] >> ops.Categorify(freq_threshold=threshold, **cat_kwargs))
        else:
            thresholds[col.name] = threshold
    if thresholds:  # one node: one value_counts pass over each partition for every column
        outputs.append(list(thresholds) >> FastCategorify(freq_threshold=thresholds, **cat_kwargs))

    crossable: dict[str, Any] = {c.name: c.name for c in spec.categorical}
    steps = {c.name: Steps(c.fill, c.clip_min, c.log, c.normalize) for c in spec.continuous}
    # A continuous column's filled (and clipped) value, for the buckets cut from it.
    values = {
        name: [name] >> ContinuousChain({name: steps[name]}, values_only=True)
        for name in {c.name for c in spec.continuous if c.bucketize is not None} | {b.source for b in spec.bucketized}
    }
    for col in spec.continuous:
        if col.bucketize is not None:
            bucketized = values[col.name] >> DomainBucketize(list(col.bucketize))
            crossable[col.name] = bucketized  # crosses see the bucket ids, not the raw value
            outputs.append(bucketized)
    plain = [c.name for c in spec.continuous if c.bucketize is None]
    if plain:  # one node: fill, clip, log and standardize statistics in one pass over the data
        outputs.append(plain >> ContinuousChain({c: steps[c] for c in plain}))

    for derived in spec.bucketized:
        # Branches off the source's filled value: the source keeps its own output.
        bucketized = (
            values[derived.source]
            >> DomainBucketize(list(derived.boundaries))
            >> ops.Rename(name=derived.name)
        )
        crossable[derived.name] = bucketized
        outputs.append(bucketized)

    for cross in spec.crosses:
        # One op per cross: a list of column groups fed to one HashedCross is flattened.
        inputs = [crossable[c] for c in cross.columns]
        selection = inputs[0] if not isinstance(inputs[0], str) else [inputs[0]]
        for extra in inputs[1:]:
            selection = selection + ([extra] if isinstance(extra, str) else extra)
        outputs.append(
            selection >> StableHashedCross(cross.buckets) >> ops.Rename(name=cross.name)
        )

    graph = outputs[0]
    for node in outputs[1:]:
        graph = graph + node
    return nvt.Workflow(graph)


@runtime_checkable
class OnePassStat(Protocol):
    """A stat op whose statistics are computed per partition and merged (see `fit_workflow`)."""

    def partition_stats(self, df: pd.DataFrame, columns: list[str]) -> Any: ...

    def merge_stats(self, parts: list[Any]) -> Any: ...


class SideStat(OnePassStat, Protocol):
    """A one-pass statistic outside the workflow, fitted with it (see `fit_workflow`)."""

    @property
    def input_columns(self) -> list[str]: ...

    def fit_finalize(self, merged: Any) -> None: ...


def fit_workflow(workflow: nvt.Workflow, ds: Dataset, read: Reader | None = None,
                 weights: list[int] | None = None, on_progress: Progress | None = None,
                 side: Sequence[SideStat] = ()) -> None:
    """Fit every statistic of `workflow` in one pass over `ds`: one task per partition reads it
    once and computes the statistics of every stat op, merged in a tree per op, reading only the
    columns some statistic needs. `read(columns)`: the same rows as lazy frames of those columns
    (`RawFiles.parts`, dictionary-encoded strings) to use instead of `ds`'s partitions;
    `ds` is then a sample with the data's dtypes: it gives the input schema and the output
    dtypes. `on_progress(done, total)` gets the summed `weights` (rows) of the parts done so far.

    `Workflow.fit` reads the data once per op (column projection gives each op its own read of
    the parquet), once more per dependency phase, and copies the columns at every graph node;
    on 3M synthetic rows that was 5.3 s of a fit whose statistics cost under 1 s. This applies
    when every stat op reads raw input columns and can merge partial statistics (`OnePassStat`:
    our `FastCategorify` and `ContinuousChain`, i.e. every workflow `build_workflow` makes with
    the default Categorify); otherwise it is `Workflow.fit`. The ops' own `fit_finalize` turns the
    merged statistics into their state, as NVTabular's executor would.

    `side`: more one-pass statistics that are not part of the workflow (the drift profile of the
    training window, `feature_store.drift.ProfileStat`), computed by the same tasks on the same
    chunk reads and handed their merged result through their own `fit_finalize`. Under
    `Workflow.fit` they take a pass of their own.
    """
    graph = workflow.graph
    nodes = [n for n in iter_nodes([graph.output_node]) if isinstance(n.op, StatOperator)]
    inputs = set(ds.to_ddf().columns)
    graph.construct_schema(ds.schema)
    if not all(isinstance(n.op, OnePassStat) and set(n.input_columns.names) <= inputs
               and all(isinstance(p.op, SelectionOp) for p in n.parents_with_dependencies) for n in nodes):
        if read is not None:  # `ds` is then only a sample: Workflow.fit on it would be wrong
            raise ValueError("fit_workflow(parts=...) needs stat ops that merge partial statistics (OnePassStat)")
        workflow.fit(ds)
        _fit_side(side, ds)
        return
    workflow_stats = [(n.op, list(n.input_columns.names)) for n in nodes]
    stats = workflow_stats + [(s, list(s.input_columns)) for s in side]
    needed = list(dict.fromkeys(c for _, columns in stats for c in columns))
    parts = read(needed) if read is not None else ds.to_ddf()[needed].to_delayed()
    partials = [dask.delayed(_partition_stats)(part, stats) for part in parts]
    merged = []
    for i, (op, _) in enumerate(stats):
        layer = [dask.delayed(operator.itemgetter(i))(p) for p in partials]
        while len(layer) > 1:
            layer = [dask.delayed(op.merge_stats)(layer[j : j + 8]) for j in range(0, len(layer), 8)]
        merged.append(layer[0])
    weights = weights if weights is not None else [1] * len(partials)
    results = compute_tracked(partials, weights, merged, on_progress)
    for (op, _), result in zip(workflow_stats, results):
        op.fit_finalize(result)
        op.fitted = True
    for stat, result in zip(side, results[len(workflow_stats):]):
        stat.fit_finalize(result)
    # What Workflow.fit ends with: output dtypes captured on a sample, then the final schema.
    sample = workflow.executor.transform(ds.to_ddf(), graph.output_node, graph.output_dtypes, capture_dtypes=True)
    Dataset(sample, cpu=ds.cpu, base_dataset=ds.base_dataset, schema=graph.output_schema).sample_dtypes()
    graph.construct_schema(ds.schema, preserve_dtypes=True)


def _partition_stats(df: pd.DataFrame, stats: list[tuple[OnePassStat, list[str]]]) -> list[Any]:
    return [op.partition_stats(df, columns) for op, columns in stats]


def _fit_side(side: Sequence[SideStat], ds: Dataset) -> None:
    """The side statistics in a pass of their own over `ds`'s partitions (after `Workflow.fit`)."""
    for stat in side:
        parts = ds.to_ddf()[list(stat.input_columns)].to_delayed()
        layer = [dask.delayed(stat.partition_stats)(p, list(stat.input_columns)) for p in parts]
        while len(layer) > 1:
            layer = [dask.delayed(stat.merge_stats)(layer[j : j + 8]) for j in range(0, len(layer), 8)]
        stat.fit_finalize(dask.compute(layer[0])[0])


@dataclass(frozen=True)
class FeatureArrays:
    """Model inputs for N rows, in the layout's column order; row i is input row i."""

    cat: np.ndarray  # int64 (N, n_cat)
    cont: np.ndarray  # float32 (N, n_cont)
    cross: np.ndarray  # int64 (N, n_cross)

    def __len__(self) -> int:
        return int(self.cat.shape[0])


def _kind(dtype: Any) -> str:
    """'i' integer, 'f' float, 'b' bool, 'O' string/object/anything else."""
    try:
        return _cached_kind(dtype)
    except TypeError:  # an unhashable dtype
        return _dtype_kind(dtype)


@functools.lru_cache(maxsize=256)
def _cached_kind(dtype: Any) -> str:
    # `_prepare` asks twice per column per batch; pandas_dtype costs ~10 us a call.
    return _dtype_kind(dtype)


def _dtype_kind(dtype: Any) -> str:
    try:
        dtype = pd.api.types.pandas_dtype(dtype)
    except TypeError:
        return "O"
    if isinstance(dtype, pd.api.extensions.ExtensionDtype):
        return "O"
    return {"u": "i", "i": "i", "f": "f", "b": "b"}.get(dtype.kind, "O")


def _json_scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class Preprocessor:
    """A fitted workflow plus what the models and the serving path need to use it."""

    spec: DatasetSpec
    workflow: nvt.Workflow
    layout: dict[str, Any]
    device: str
    input_dtypes: dict[str, str]
    probe_row: dict[str, Any]  # one known non-null value per input column (see _prepare)

    # ---------------------------------------------------------------- fitting
    @classmethod
    def fit(
        cls,
        spec: DatasetSpec,
        train_df: pd.DataFrame,
        work_dir: str | Path | None = None,
        categorify: str = "fast",
    ) -> Preprocessor:
        """Fit on `train_df` only (the training window; never the holdout). Vocabularies go
        to `work_dir` (a temp dir removed with this object when not given) until `save`.
        A thin wrapper over `fit_dataset` on an in-memory, one-partition Dataset."""
        inputs = spec.feature_columns
        missing = [c for c in inputs if c not in train_df.columns]
        if missing:
            raise DataError("training frame", "required column present", column=missing[0])
        frame = train_df[inputs].reset_index(drop=True)
        if len(frame) == 0:
            raise DataError("training frame", "non-empty training data")
        scratch = None
        if work_dir is None:
            work_dir = scratch = tempfile.mkdtemp(prefix="recloop-nvt-")
        ds = Dataset(frame, cpu=select_device() == "cpu")
        pre = cls.fit_dataset(spec, ds, Path(work_dir), categorify=categorify)
        if scratch is not None:  # after `save`, the workflow reads its saved copy instead
            weakref.finalize(pre, shutil.rmtree, scratch, True)
        return pre

    @classmethod
    def fit_files(cls, spec: DatasetSpec, raw: RawFiles, work_dir: Path,
                  on_progress: Progress | None = None, side: Sequence[SideStat] = ()) -> Preprocessor:
        """Fit on the training days' part files (`cluster.raw_files`), the night's way: the
        statistics in one pass over dictionary-encoded chunks, the input schema and dtypes from
        a sample of the first part file cast to the dtypes of the whole (`RawFiles.sample`).
        Never builds a `merlin.io.Dataset` over the files: its schema inference, dtype sampling
        and partition planning read whole partitions of object strings (6 of the 9.4 s of a
        1.5M-row Criteo fit). `on_progress(rows done, rows)` as chunks finish. `side`: statistics
        computed on the same chunk reads (see `fit_workflow`), e.g. the window's drift profile."""
        inputs = spec.feature_columns
        missing = [c for c in inputs if c not in raw.columns]
        if missing:
            raise DataError("training data", "required column present", column=missing[0])
        raw = dataclasses.replace(raw, columns=inputs)
        if not raw.chunks:
            raise DataError("training data", "non-empty training data")
        sample = raw.sample()
        probe = _probe_row((raw.read(c) for c in raw.chunks), inputs)  # the first chunks, read here
        return cls._fit(spec, Dataset(sample, cpu=True), sample.dtypes, probe, work_dir, "fast",
                        lambda columns: dataclasses.replace(raw, columns=columns).parts(),
                        [c.rows for c in raw.chunks], on_progress, side)

    @classmethod
    def fit_dataset(
        cls, spec: DatasetSpec, ds: Dataset, work_dir: Path, categorify: str = "fast"
    ) -> Preprocessor:
        """Fit on a (lazy, partitioned) Dataset of the training days only; the statistics are
        computed partition by partition on the global Dask client when there is one (see
        `feature_store.cluster.dask_client`). Vocabularies go to `work_dir`.

        The input dtypes recorded are the dataset's (its Dask meta): build parquet datasets
        with `cluster.raw_dataset`, which gives an integer column with nulls in any part
        float64 in every partition, as `pd.concat` of the parts would. `categorify`: see
        `build_workflow` ("nvtabular" only for reference measurements and tests)."""
        inputs = spec.feature_columns
        ddf = ds.to_ddf()
        missing = [c for c in inputs if c not in ddf.columns]
        if missing:
            raise DataError("training data", "required column present", column=missing[0])
        ddf = ddf[inputs]
        # Reads the first partition(s) only; raises when empty.
        probe = _probe_row((ddf.get_partition(i).compute() for i in range(ddf.npartitions)), inputs)
        return cls._fit(spec, Dataset(ddf, cpu=select_device() == "cpu"), ddf.dtypes, probe, work_dir, categorify)

    @classmethod
    def _fit(cls, spec: DatasetSpec, ds: Dataset, dtypes: pd.Series, probe: dict[str, Any], work_dir: Path,
             categorify: str, read: Reader | None = None, weights: list[int] | None = None,
             on_progress: Progress | None = None, side: Sequence[SideStat] = ()) -> Preprocessor:
        device = select_device()
        workflow = build_workflow(spec, out_path=work_dir, categorify=categorify)
        fit_workflow(workflow, ds, read, weights, on_progress, side)
        return cls(
            spec=spec,
            workflow=workflow,
            layout=_layout(spec, workflow),
            device=device,
            input_dtypes={c: str(dtypes[c]) for c in spec.feature_columns},
            probe_row=probe,
        )

    # ---------------------------------------------------------------- transform
    @property
    def names(self) -> OutputNames:
        return OutputNames(
            categorical=tuple(f["name"] for f in self.layout["categorical"]),
            continuous=tuple(self.layout["continuous"]),
            crosses=tuple(f["name"] for f in self.layout["crosses"]),
        )

    @functools.cached_property
    def compiled(self) -> CompiledTransform | None:
        """The workflow as numpy steps (`feature_store.compiled`), or None when it holds an op
        without a kernel (then the workflow itself runs) or runs on GPU (cuDF)."""
        if self.device != "cpu":
            return None
        try:
            return CompiledTransform.compile(self.workflow)
        except Unsupported:
            return None

    def transform(self, df: pd.DataFrame) -> FeatureArrays:
        """Raw rows -> model inputs, vectorised (one pass, no per-row Python)."""
        names = self.names
        columns = self.transform_columns(df)
        return FeatureArrays(
            cat=_matrix(columns, names.categorical, np.int64, len(df)),
            cont=_matrix(columns, names.continuous, np.float32, len(df)),
            cross=_matrix(columns, names.crosses, np.int64, len(df)),
        )

    def transform_columns(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        """Raw rows -> one array per output column (int64 ids, float32 continuous values)."""
        names = self.names
        blocks = ((names.categorical, np.int64), (names.continuous, np.float32), (names.crosses, np.int64))
        if len(df) == 0:
            return {name: np.empty(0, dtype) for block, dtype in blocks for name in block}
        frame, null_rows = self._prepare(df)
        if self.compiled is not None:
            out = self.compiled(frame)
        elif self.device == "gpu":
            from merlin.core.compat import cudf

            out = self.workflow.transform(cudf.from_pandas(frame)).to_pandas()
        else:
            out = self.workflow.transform(frame)
        columns = {name: np.asarray(out[name], dtype)[: len(df)] for block, dtype in blocks for name in block}
        for column, rows in null_rows.items():
            columns[column][rows] = CATEGORIFY_NULL_ID
        return columns

    def transform_to_parquet(
        self, raw: RawFiles | Dataset, out_dir: Path, label: str | None, row_group_rows: int,
        on_progress: Progress | None = None,
    ) -> TransformedSplit:
        """Transform part files (`cluster.raw_files`: chunk by chunk, strings dictionary-encoded)
        or a (lazy) Dataset (partition by partition) into `out_dir/part-NNNNN.parquet`, one file
        per non-empty chunk, row groups of `row_group_rows`, rows in input order. Columns: the
        categorical and cross ids (int64), the continuous values (float32) and, when `label` is
        given, that column as float32. Each chunk goes through `transform_columns`, so the ids
        are exactly the in-memory (serving) ones. Runs on the global Dask client when there is
        one, else on local threads. `on_progress(rows done, rows)` as chunks finish (files only)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.glob("part-*.parquet"):  # a retried night rewrites the split
            stale.unlink()
        columns = list(self.input_dtypes) + ([label] if label else [])
        have = raw.columns if isinstance(raw, RawFiles) else raw.to_ddf().columns
        missing = [c for c in columns if c not in have]
        if missing:
            raise DataError("transform input", "required column present", column=missing[0])
        me = dask.delayed(self)  # one graph key: sent once per worker, not once per task
        if isinstance(raw, RawFiles):
            parts = dataclasses.replace(raw, columns=columns).parts()
        else:
            parts = raw.to_ddf()[columns].to_delayed()
        paths = [out_dir / f"part-{i:05d}.parquet" for i in range(len(parts))]
        tasks = [
            dask.delayed(_write_transformed)(me, part, str(path), label, row_group_rows)
            for part, path in zip(parts, paths)
        ]
        weights = [c.rows for c in raw.chunks] if isinstance(raw, RawFiles) else [1] * len(tasks)
        rows = compute_tracked(tasks, weights, on_progress=on_progress if isinstance(raw, RawFiles) else None)
        written = [path for path, n in zip(paths, rows) if n > 0]
        return TransformedSplit(directory=out_dir, files=written, rows=int(sum(rows)))

    def _prepare(self, df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
        """The input columns with their fit-time dtypes and a fresh 0..N-1 index, plus the
        rows whose id must be forced to the null id afterwards.

        Works around Categorify on CPU: it writes null ids by index label (wrong rows on any
        other index); it fails on a batch whose column is all null (common when serving one
        row), so such a batch gets one known row appended (dropped after the transform); and
        it cannot take a null in a column that was integer at fit time, so those nulls are
        filled with a known value and their Categorify id is set to the null id afterwards
        (a hashed id or cross of such a row sees the filled value).
        """
        columns: dict[str, pd.Series] = {}
        null_rows: dict[str, np.ndarray] = {}
        categorify = {c.name for c in self.spec.categorical if c.hash_buckets is None}
        index = df.index
        if not (isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1):
            df = df.reset_index(drop=True)
        for column, fit_dtype in self.input_dtypes.items():
            if column not in df.columns:
                raise DataError(_TRANSFORM_SOURCE, "required column present", column=column)
            ser = _coerce(df[column], fit_dtype, column)
            if _kind(fit_dtype) == "i" and _kind(ser.dtype) != "i":  # nulls in an int column
                missing = ser.isna().to_numpy()
                ser = ser.fillna(self.probe_row[column]).astype(fit_dtype)
                if column in categorify:
                    null_rows[column] = np.flatnonzero(missing)
            columns[column] = ser
        frame = pd.DataFrame(columns)
        if any(_all_null(columns[c]) for c in categorify if c in columns):  # not frame[c]: a new Series each
            probe = pd.DataFrame({c: [v] for c, v in self.probe_row.items()})
            probe = probe.astype({c: frame[c].dtype for c in probe if _kind(frame[c].dtype) != "O"})
            frame = pd.concat([frame, probe], ignore_index=True)
        return frame, null_rows

    # ---------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        """Write `directory/workflow` (NVTabular) and `directory/layout.json` (layout, device,
        nvtabular version, input dtypes, spec). Loading runs pickled code: own bundles only."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # Workflow.save repoints Categorify at the saved copy; point it back so this object
        # keeps working when the caller removes `directory` (e.g. after logging it to MLflow).
        nodes = iter_nodes([self.workflow.output_node])
        before = [
            (n.op, dict(n.op.categories or {}), n.op.out_path)
            for n in nodes
            if isinstance(n.op, StatOperator) and hasattr(n.op, "categories")
        ]
        self.workflow.save(str(directory / WORKFLOW_DIR))
        for op, categories, out_path in before:
            op.categories, op.out_path = categories, out_path
        meta = {
            **self.layout,
            "device": self.device,
            "nvtabular_version": nvt.__version__,
            "input_dtypes": self.input_dtypes,
            "probe_row": self.probe_row,
            "spec": self.spec.model_dump(mode="json"),
        }
        (directory / LAYOUT_FILE).write_text(json.dumps(meta, indent=2, sort_keys=False))
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> Preprocessor:
        """Load a saved preprocessor. Refuses a device change: hashed ids differ between
        CPU (pandas) and GPU (cuDF), so a model would silently see different inputs."""
        directory = Path(directory)
        meta = json.loads((directory / LAYOUT_FILE).read_text())
        saved_device = meta["device"]
        current = device or select_device()
        if current != saved_device:
            raise RuntimeError(
                f"{directory}: workflow was fitted on {saved_device} but this process runs on "
                f"{current}; hashed ids differ between devices. Load on a {saved_device} host."
            )
        layout = {k: meta[k] for k in _LAYOUT_KEYS}
        return cls(
            spec=DatasetSpec.model_validate(meta["spec"]),
            workflow=nvt.Workflow.load(str(directory / WORKFLOW_DIR)),
            layout=layout,
            device=saved_device,
            input_dtypes=dict(meta["input_dtypes"]),
            probe_row=dict(meta["probe_row"]),
        )


@dataclass(frozen=True)
class TransformedSplit:
    """One transformed split on disk (see `Preprocessor.transform_to_parquet`)."""

    directory: Path
    files: list[Path]  # in input order
    rows: int


def _write_transformed(
    pre: Preprocessor, df: pd.DataFrame, path: str, label: str | None, row_group_rows: int
) -> int:
    """Transform one partition and write it atomically; returns its row count."""
    if len(df) == 0:
        return 0
    columns = pre.transform_columns(df)
    if label:
        values = df[label]
        if values.isna().any():
            raise DataError(path, "no nulls", column=label, detail=f"{int(values.isna().sum())} null label(s)")
        columns[label] = values.to_numpy(np.float32)
    table = pa.table(columns)
    tmp = f"{path}.tmp"
    pq.write_table(table, tmp, row_group_size=max(1, int(row_group_rows)))
    os.replace(tmp, path)
    return len(df)


def _probe_row(frames: Iterable[pd.DataFrame], columns: list[str], max_frames: int = 4) -> dict[str, Any]:
    """One non-null value per column, the first in the data's order (see `_prepare`), looked
    for in the first `max_frames` partitions or chunks; a column null in all of them gets 0 (or
    "" for a string column): any value serves, it is recorded and serving uses the same one.
    Raises on a dataset without rows."""
    probe: dict[str, Any] = {c: None for c in columns}
    todo, rows, last = set(columns), 0, None
    for i, part in enumerate(frames):
        if i == max_frames:
            break
        rows += len(part)
        last = part
        for column in list(todo):
            values = part[column].dropna()
            if len(values):
                probe[column] = _json_scalar(values.iloc[0])
                todo.discard(column)
        if not todo:
            break
    if rows == 0:
        raise DataError("training data", "non-empty training data")
    for column in todo:
        probe[column] = 0 if _kind(last[column].dtype) in "if" else ""
    return probe


def _all_null(ser: pd.Series) -> bool:
    # Checking the first value first keeps this O(1) for the usual, non-null column.
    return bool(pd.isna(ser.iat[0])) and not bool(ser.notna().any())


def _matrix(columns: dict[str, np.ndarray], names: tuple[str, ...], dtype: Any, n: int) -> np.ndarray:
    if not names:
        return np.empty((n, 0), dtype)
    return np.stack([columns[c] for c in names], axis=1).astype(dtype, copy=False)


def _coerce(ser: pd.Series, fit_dtype: str, column: str) -> pd.Series:
    """Bring a serving column to its fit-time dtype: Categorify and the hashes compare values
    by type, so hour=5 (int) and hour="5" (str) would otherwise be different categories."""
    want, have = _kind(fit_dtype), _kind(ser.dtype)
    if want == have:
        return ser.astype(fit_dtype) if want in "if" and str(ser.dtype) != fit_dtype else ser
    if want == "O":
        return ser.astype(str).astype(object).where(ser.notna(), None)
    numeric = pd.to_numeric(ser, errors="coerce")
    bad = numeric.isna() & ser.notna()
    if bad.any():
        raise DataError(
            _TRANSFORM_SOURCE,
            f"{fit_dtype} values",
            column=column,
            detail=f"{int(bad.sum())} value(s) not numeric, e.g. {ser[bad].iloc[0]!r}",
        )
    if want == "i" and numeric.notna().all():
        return numeric.astype(fit_dtype)
    return numeric.astype("float64")  # an int column with nulls stays float; see _prepare


def _layout(spec: DatasetSpec, workflow: Any) -> dict[str, Any]:
    """The models' input layout, with every table size read from the fitted schema."""
    names = output_names(spec)
    schema = workflow.output_schema
    sizes = ops.get_embedding_sizes(workflow)
    if isinstance(sizes, tuple):  # (single-hot, multi-hot) when list columns exist
        sizes = {**sizes[0], **sizes[1]}

    def cardinality(name: str) -> int:
        if name in sizes:
            return int(sizes[name][0])
        domain = schema[name].int_domain
        if domain is None or domain.max is None:
            raise ValueError(f"fitted workflow declares no id domain for '{name}'")
        return int(domain.max) + 1

    expected = (*names.categorical, *names.continuous, *names.crosses)
    missing = [n for n in expected if n not in schema.column_names]
    if missing:
        raise ValueError(f"fitted workflow lacks outputs {missing}; has {schema.column_names}")
    categorical = [{"name": n, "cardinality": cardinality(n)} for n in names.categorical]
    return {
        "categorical": categorical,
        "continuous": list(names.continuous),
        "crosses": [{"name": n, "cardinality": cardinality(n)} for n in names.crosses],
        "user_fields": [n for n in names.categorical if n in spec.user_columns],
        "item_fields": [n for n in names.categorical if n in spec.item_columns],
    }
