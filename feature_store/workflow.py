"""The NVTabular preprocessing built from a dataset spec, and the fitted `Preprocessor`.

One `nvt.Workflow` holds every feature transform, the feature crosses included, so
training and serving apply exactly the same code. The workflow is fitted on the training
window only and saved inside each model version next to `layout.json`, the input layout
the models are built from (`models.schema.InputSchema.from_layout`).

Three NVTabular 23.08 behaviours are worked around here (see the op docstrings and
`Preprocessor.transform`):
  * on CPU, `HashedCross` and `HashBucket` hash the pandas *index* together with the value,
    so the same value lands in a different bucket on every row; our ops hash values only;
  * hashed crosses and `Bucketize` declare no id domain, so their table size is not in the
    fitted schema; our ops declare it, so every cardinality is read from the fitted schema;
  * `Categorify` places null ids by index *label*, fails on a batch whose column is all
    null, and fails on a null in a column that was integer at fit time; `_prepare` resets
    the index, pads such batches with one known row and fills integer nulls. Our
    `FastCategorify` (feature_store/categorify.py), which replaces it because it is slow
    on CPU (NVTabular 1289), gives the same ids and has none of these bugs; the
    workarounds stay for workflows fitted with `categorify="nvtabular"`.

Two ways in: `Preprocessor.fit(spec, frame)` + `transform(frame)` in memory (serving,
small data), or `Preprocessor.fit_dataset(spec, ds, work_dir)` +
`transform_to_parquet(ds, out_dir, label, row_group_rows)` over lazy Dask partitions
(`feature_store.cluster.raw_dataset`), which never holds a whole window. Every partition
goes through `transform`, so both give the same ids.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np
import nvtabular as nvt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from merlin.dag import ColumnSelector, iter_nodes
from merlin.dag.ops.stat_operator import StatOperator
from merlin.io import Dataset
from merlin.schema import Tags
from nvtabular import ops

from feature_store.categorify import FastCategorify
from feature_store.cluster import shared_partitions
from feature_store.errors import DataError
from feature_store.spec import DatasetSpec

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


def _hash_rows(frame: Any) -> Any:
    """Row-wise hash of the values only, never the index (cuDF's hash already ignores it).
    Columns are combined in order, so (a, b) and (b, a) differ and a == b is not always 0,
    unlike the XOR of per-column hashes NVTabular uses."""
    if isinstance(frame, (pd.DataFrame, pd.Series)):
        return pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return frame.hash_values().values


def _emb_dim(cardinality: int) -> int:
    # NVTabular's rule of thumb, recorded only as a hint; the models choose their own size.
    return int(min(max(16, round(1.6 * cardinality**0.56)), 512))


def _domain(cardinality: int) -> dict[str, Any]:
    return {
        "domain": {"min": 0, "max": cardinality - 1},
        "embedding_sizes": {"cardinality": cardinality, "dimension": _emb_dim(cardinality)},
    }


class StableHashedCross(ops.HashedCross):
    """`HashedCross` of one column tuple whose ids depend on the values only.

    NVTabular 23.08 hashes with `pd.util.hash_pandas_object(index=True)` on CPU, so a cross
    id depends on the row's index. Also declares the id domain [0, num_buckets) and the
    categorical tag, so the table size is read from the fitted schema like any other.
    """

    def transform(self, col_selector: ColumnSelector, df: Any) -> Any:
        columns = list(col_selector.names)
        hashed = _hash_rows(df[columns]) % np.uint64(self.num_buckets)
        out = type(df)(index=df.index)
        out["_X_".join(columns)] = hashed.astype(self.output_dtype)
        return out

    def _compute_properties(self, col_schema: Any, input_schema: Any) -> Any:
        # Replace, do not inherit, the inputs' properties (a bucketized input has its own domain).
        return col_schema.with_properties(_domain(int(self.num_buckets)))

    @property
    def output_tags(self) -> list[Tags]:
        return [Tags.CATEGORICAL]


class StableHashBucket(ops.HashBucket):
    """`HashBucket` whose ids depend on the values only (see `StableHashedCross`), with the
    domain [0, num_buckets) (23.08 declares max = num_buckets, one too many)."""

    def transform(self, col_selector: ColumnSelector, df: Any) -> Any:
        out = type(df)(index=df.index)
        for column in col_selector.names:
            hashed = _hash_rows(df[column]) % np.uint64(self.num_buckets)
            out[column] = hashed.astype(self.output_dtype)
        return out

    def _compute_properties(self, col_schema: Any, input_schema: Any) -> Any:
        return col_schema.with_properties(_domain(int(self.num_buckets)))


class DomainBucketize(ops.Bucketize):
    """`Bucketize` that declares its id domain [0, len(boundaries)]."""

    def _compute_properties(self, col_schema: Any, input_schema: Any) -> Any:
        return col_schema.with_properties(_domain(len(self.boundaries(col_schema.name)) + 1))


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
    values: dict[str, Any] = {}  # continuous column -> its filled (and clipped) value node
    for col in spec.continuous:
        node = [col.name] >> (ops.FillMedian() if col.fill == "median" else ops.FillMissing(0))
        if col.clip_min is not None:
            node = node >> ops.Clip(min_value=col.clip_min)
        values[col.name] = node
        if col.bucketize is not None:
            bucketized = node >> DomainBucketize(list(col.bucketize))
            crossable[col.name] = bucketized  # crosses see the bucket ids, not the raw value
            outputs.append(bucketized)
            continue
        if col.log:
            node = node >> ops.LogOp()
        if col.normalize:
            node = node >> ops.Normalize()
        outputs.append(node)

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
        ddf = shared_partitions(ddf[inputs])  # each partition read once, not once per statistic
        probe = _probe_row(ddf)  # reads the first partition(s) only; raises when empty
        device = select_device()
        workflow = build_workflow(spec, out_path=work_dir, categorify=categorify)
        workflow.fit(Dataset(ddf, cpu=device == "cpu"))
        return cls(
            spec=spec,
            workflow=workflow,
            layout=_layout(spec, workflow),
            device=device,
            input_dtypes={c: str(ddf[c].dtype) for c in inputs},
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

    def transform(self, df: pd.DataFrame) -> FeatureArrays:
        """Raw rows -> model inputs, vectorised (one workflow pass, no per-row Python)."""
        names = self.names
        n = len(df)
        if n == 0:
            return FeatureArrays(
                cat=np.empty((0, len(names.categorical)), np.int64),
                cont=np.empty((0, len(names.continuous)), np.float32),
                cross=np.empty((0, len(names.crosses)), np.int64),
            )
        frame, null_rows = self._prepare(df)
        if self.device == "gpu":
            from merlin.core.compat import cudf

            out = self.workflow.transform(cudf.from_pandas(frame)).to_pandas()
        else:
            out = self.workflow.transform(frame)
        cat = _matrix(out, names.categorical, np.int64, len(out))[:n]
        for column, rows in null_rows.items():
            cat[rows, names.categorical.index(column)] = CATEGORIFY_NULL_ID
        return FeatureArrays(
            cat=cat,
            cont=_matrix(out, names.continuous, np.float32, len(out))[:n],
            cross=_matrix(out, names.crosses, np.int64, len(out))[:n],
        )

    def transform_to_parquet(
        self, ds: Dataset, out_dir: Path, label: str | None, row_group_rows: int
    ) -> TransformedSplit:
        """Transform a (lazy) Dataset partition by partition into `out_dir/part-NNNNN.parquet`,
        one file per non-empty input partition, row groups of `row_group_rows`, rows in input
        order. Columns: the categorical and cross ids (int64), the continuous values (float32)
        and, when `label` is given, that column as float32. Each partition goes through
        `transform`, so the ids are exactly the in-memory (serving) ones. Runs on the global
        Dask client when there is one, else on local threads."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.glob("part-*.parquet"):  # a retried night rewrites the split
            stale.unlink()
        columns = list(self.input_dtypes) + ([label] if label else [])
        ddf = ds.to_ddf()
        missing = [c for c in columns if c not in ddf.columns]
        if missing:
            raise DataError("transform input", "required column present", column=missing[0])
        me = dask.delayed(self)  # one graph key: sent once per worker, not once per task
        parts = ddf[columns].to_delayed()
        paths = [out_dir / f"part-{i:05d}.parquet" for i in range(len(parts))]
        tasks = [
            dask.delayed(_write_transformed)(me, part, str(path), label, row_group_rows)
            for part, path in zip(parts, paths)
        ]
        rows = dask.compute(*tasks)
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
        for column, fit_dtype in self.input_dtypes.items():
            if column not in df.columns:
                raise DataError(_TRANSFORM_SOURCE, "required column present", column=column)
            ser = _coerce(df[column].reset_index(drop=True), fit_dtype, column)
            if _kind(fit_dtype) == "i" and _kind(ser.dtype) != "i":  # nulls in an int column
                missing = ser.isna().to_numpy()
                ser = ser.fillna(self.probe_row[column]).astype(fit_dtype)
                if column in categorify:
                    null_rows[column] = np.flatnonzero(missing)
            columns[column] = ser
        frame = pd.DataFrame(columns)
        if any(_all_null(frame[c]) for c in categorify if c in frame):
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
    arrays = pre.transform(df)
    names = pre.names
    columns: dict[str, np.ndarray] = {}
    for block, block_names in (
        (arrays.cat, names.categorical),
        (arrays.cont, names.continuous),
        (arrays.cross, names.crosses),
    ):
        by_column = np.ascontiguousarray(block.T)  # (F, N): each column contiguous
        columns.update({name: by_column[i] for i, name in enumerate(block_names)})
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


def _probe_row(ddf: Any) -> dict[str, Any]:
    """One non-null value per column, the first in partition order (see `_prepare`). Reads
    partitions in order until every column has one: the first one, unless a column is null
    there. Raises on a dataset without rows."""
    probe: dict[str, Any] = {c: None for c in ddf.columns}
    todo, rows = set(ddf.columns), 0
    for i in range(ddf.npartitions):
        part = ddf.get_partition(i).compute()
        rows += len(part)
        for column in list(todo):
            values = part[column].dropna()
            if len(values):
                probe[column] = _json_scalar(values.iloc[0])
                todo.discard(column)
        if not todo:
            break
    if rows == 0:
        raise DataError("training data", "non-empty training data")
    return probe


def _all_null(ser: pd.Series) -> bool:
    # Checking the first value first keeps this O(1) for the usual, non-null column.
    return bool(pd.isna(ser.iat[0])) and not bool(ser.notna().any())


def _matrix(out: pd.DataFrame, columns: tuple[str, ...], dtype: Any, n: int) -> np.ndarray:
    if not columns:
        return np.empty((n, 0), dtype)
    return np.ascontiguousarray(out[list(columns)].to_numpy(dtype=dtype))


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
