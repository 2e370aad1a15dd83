"""The streaming preprocessing: fit on a partitioned parquet Dataset, transform to parquet,
on local threads, a LocalCluster and a real scheduler with worker processes."""

from __future__ import annotations

import os
import socket
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import nvtabular as nvt
import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest
from merlin.dag import iter_nodes
from merlin.io import Dataset
from nvtabular import ops

from feature_store.categorify import FastCategorify
from feature_store.cluster import (
    ClusterUnreachable,
    DaskConfig,
    dask_client,
    process_cluster,
    raw_dataset,
    raw_files,
)
from feature_store.generators.synthetic import generate_day, make_world
from feature_store.spec import load_spec
from feature_store.workflow import CATEGORIFY_NULL_ID, FeatureArrays, Preprocessor

SPEC = load_spec("synthetic_clicks")
COLUMNS = [*SPEC.feature_columns, SPEC.label]
REPO = Path(__file__).resolve().parents[2]
PART_SIZE = "64KB"  # several partitions per part file


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> list[list[Path]]:
    """4 days x 2 part files x several row groups. Day 0 part 1 has null hours (an int64
    column read as float64 there), nulls in strings and prices, and an all-null category."""
    root = tmp_path_factory.mktemp("raw")
    world = make_world(3)
    days = []
    for d in range(4):
        frame = generate_day(world, date(2026, 1, 1) + timedelta(days=d), 2_000, 3)
        halves = [frame.iloc[:1_000].reset_index(drop=True), frame.iloc[1_000:].reset_index(drop=True)]
        if d == 0:
            halves[1].loc[::7, "hour"] = np.nan
            halves[1].loc[::5, "device"] = None
            halves[1].loc[::3, "price"] = np.nan
            halves[1].loc[:, "item_category"] = None
        files = []
        for p, half in enumerate(halves):
            path = root / f"day{d}-part{p}.parquet"
            half.to_parquet(path, index=False, row_group_size=300)
            files.append(path)
        days.append(files)
    return days


def _train_files(parts: list[list[Path]]) -> list[Path]:
    return [f for day in parts[:3] for f in day]


def _all_files(parts: list[list[Path]]) -> list[Path]:
    return [f for day in parts for f in day]


def _raw_frame(files: list[Path]) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _read_split(files: list[Path]) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _assert_split_equals(split: pd.DataFrame, pre: Preprocessor, expected: FeatureArrays, labels) -> None:
    names = pre.names
    np.testing.assert_array_equal(split[list(names.categorical)].to_numpy(), expected.cat)
    np.testing.assert_array_equal(split[list(names.crosses)].to_numpy(), expected.cross)
    np.testing.assert_array_equal(split[list(names.continuous)].to_numpy(), expected.cont)
    np.testing.assert_array_equal(split[SPEC.label].to_numpy(), np.asarray(labels, np.float32))


@pytest.fixture(scope="module", params=["files", "dataset"])
def streamed(request, parts: list[list[Path]], tmp_path_factory: pytest.TempPathFactory):
    """The night's path (`raw_files`: chunks of row groups, strings read dictionary-encoded)
    and the merlin Dataset path (object strings); both must give the in-memory ids."""
    work = tmp_path_factory.mktemp("night")
    if request.param == "files":
        raw = raw_files(_train_files(parts), COLUMNS, PART_SIZE)
        assert "user_id" in raw.strings and "item_category" in raw.strings  # all null in one part
        pre = Preprocessor.fit_files(SPEC, raw, work / "vocab")
        train = raw_dataset(_train_files(parts), COLUMNS, PART_SIZE)
        source = raw_files(_all_files(parts), COLUMNS, PART_SIZE)
    else:
        train = raw_dataset(_train_files(parts), COLUMNS, PART_SIZE)
        pre = Preprocessor.fit_dataset(SPEC, train, work / "vocab")
        source = raw_dataset(_all_files(parts), COLUMNS, PART_SIZE)
    split = pre.transform_to_parquet(source, work / "out", SPEC.label, 250)
    return train, pre, split


def test_dictionary_encoded_chunks_fit_the_same_vocabularies(parts, tmp_path: Path) -> None:
    chunks = raw_files(_train_files(parts), COLUMNS, PART_SIZE)
    assert len(chunks.chunks) > len(_train_files(parts))  # several chunks per part file
    frame = chunks.parts()[0].compute()
    assert isinstance(frame["user_id"].dtype, pd.CategoricalDtype)
    a = Preprocessor.fit_files(SPEC, chunks, tmp_path / "a")
    b = Preprocessor.fit_dataset(SPEC, raw_dataset(_train_files(parts), COLUMNS, PART_SIZE), tmp_path / "b")
    assert a.layout == b.layout and a.input_dtypes == b.input_dtypes
    ops_a, ops_b = (next(n.op for n in iter_nodes([p.workflow.output_node]) if isinstance(n.op, FastCategorify))
                    for p in (a, b))
    for column, vocab in ops_b.vocabs.items():
        assert ops_a.vocabs[column].equals(vocab), column


def test_raw_dataset_is_partitioned_with_one_dtype_per_column(streamed, parts) -> None:
    train, pre, _ = streamed
    assert train.to_ddf().npartitions > len(_train_files(parts))
    # hour is int64 in five part files and float64 (nulls) in one: float64 everywhere.
    assert pre.input_dtypes["hour"] == "float64"
    assert pre.input_dtypes["position"] == "int64"
    assert pre.input_dtypes["user_id"] == "object"


def test_parquet_split_equals_in_memory_transform(streamed, parts) -> None:
    _, pre, split = streamed
    assert len(split.files) > len(_all_files(parts))
    assert all(pq.ParquetFile(f).metadata.num_row_groups >= 1 for f in split.files)
    assert max(pq.ParquetFile(f).metadata.num_row_groups for f in split.files) > 1
    raw = _raw_frame(_all_files(parts))
    assert split.rows == len(raw)
    out = _read_split(split.files)
    for name in (*pre.names.categorical, *pre.names.crosses):
        assert out[name].dtype == np.int64
    for name in (*pre.names.continuous, SPEC.label):
        assert out[name].dtype == np.float32
    _assert_split_equals(out, pre, pre.transform(raw), raw[SPEC.label])


def test_nulls_in_a_part_get_the_null_id(streamed, parts) -> None:
    _, pre, split = streamed
    raw = _raw_frame(_all_files(parts))
    out = _read_split(split.files)
    for column in ("hour", "device", "item_category"):
        nulls = raw[column].isna().to_numpy()
        assert nulls.any()
        assert (out.loc[nulls, column] == CATEGORIFY_NULL_ID).all()


def test_save_load_round_trip(streamed, parts, tmp_path: Path) -> None:
    _, pre, split = streamed
    pre.save(tmp_path / "pre")
    for column in ("user_id", "item_id", "hour"):
        vocab = pd.read_parquet(tmp_path / "pre" / "workflow" / "categories" / f"unique.{column}.parquet")
        assert vocab.index[0] == 3 and f"{column}_size" in vocab
    loaded = Preprocessor.load(tmp_path / "pre")
    assert loaded.layout == pre.layout
    raw = _raw_frame(_all_files(parts))
    again = loaded.transform_to_parquet(
        raw_dataset(_all_files(parts), COLUMNS, PART_SIZE), tmp_path / "again", SPEC.label, 250
    )
    _assert_split_equals(_read_split(again.files), loaded, pre.transform(raw), raw[SPEC.label])


def test_fast_categorify_workflow_equals_nvtabular_categorify(parts) -> None:
    raw = _raw_frame(_all_files(parts))
    train = _raw_frame(_train_files(parts))
    fast = Preprocessor.fit(SPEC, train)
    reference = Preprocessor.fit(SPEC, train, categorify="nvtabular")
    assert fast.layout == reference.layout
    a, b = fast.transform(raw), reference.transform(raw)
    np.testing.assert_array_equal(a.cat, b.cat)
    np.testing.assert_array_equal(a.cross, b.cross)
    np.testing.assert_array_equal(a.cont, b.cont)


@pytest.mark.parametrize("threshold", [0, 2, 5])
def test_fast_categorify_ids_equal_categorify(threshold: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(threshold)
    n = 4_000
    train = pd.DataFrame(
        {
            "s": rng.choice([f"v{i}" for i in range(400)], n),
            "i": rng.zipf(1.6, n) % 500,  # many ties in the counts
            "f": rng.integers(0, 30, n).astype(np.float64),
        }
    )
    train.loc[::13, "s"] = None
    train.loc[::17, "f"] = np.nan
    test = train.sample(frac=1.0, random_state=0).reset_index(drop=True)
    test.loc[:20, "s"] = "never-seen"
    test.loc[21:40, "i"] = 10_000
    test.loc[41:60, "f"] = 99.0
    cols = list(train.columns)
    reference = nvt.Workflow(cols >> ops.Categorify(freq_threshold=threshold, out_path=str(tmp_path / "a")))
    fast = nvt.Workflow(cols >> FastCategorify(freq_threshold=threshold, out_path=str(tmp_path / "b")))
    reference.fit(Dataset(train, cpu=True))
    fast.fit(Dataset(train, cpu=True, npartitions=4))  # merged over partitions, same ids
    expected, got = reference.transform(test), fast.transform(test)
    for column in cols:
        np.testing.assert_array_equal(got[column].to_numpy(), expected[column].to_numpy(), err_msg=column)
    assert ops.get_embedding_sizes(fast) == ops.get_embedding_sizes(reference)
    for column in cols:
        name = f"categories/unique.{column}.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "b" / name), pd.read_parquet(tmp_path / "a" / name))


def test_fast_categorify_all_null_training_column(tmp_path: Path) -> None:
    """NVTabular's Categorify cannot fit an all-null column; ours gives null 1, the rest OOV."""
    train = pd.DataFrame({"e": pd.Series([None] * 10, dtype=object)})
    workflow = nvt.Workflow(["e"] >> FastCategorify(out_path=str(tmp_path)))
    workflow.fit(Dataset(train, cpu=True))
    out = workflow.transform(pd.DataFrame({"e": ["x", None, "y"]}))
    assert out["e"].tolist() == [2, 1, 2]
    assert ops.get_embedding_sizes(workflow)["e"][0] == 4  # pad, null, oov + Categorify's null row


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stream(config: DaskConfig, parts, work: Path) -> pd.DataFrame:
    """The night's path on a cluster, with the progress it reports: (rows done, rows) per chunk."""
    seen: dict[str, list[tuple[int, int]]] = {"fit": [], "transform": []}
    with dask_client(config) as client:
        assert len(client.scheduler_info()["workers"]) >= 1
        train = raw_files(_train_files(parts), COLUMNS, PART_SIZE)
        pre = Preprocessor.fit_files(SPEC, train, work / "vocab", on_progress=lambda *a: seen["fit"].append(a))
        source = raw_files(_all_files(parts), COLUMNS, PART_SIZE)
        split = pre.transform_to_parquet(source, work / "out", SPEC.label, 250,
                                         on_progress=lambda *a: seen["transform"].append(a))
    for stage, rows in (("fit", train.rows), ("transform", source.rows)):
        done = [d for d, _ in seen[stage]]
        assert done == sorted(done) and len(done) > 2, stage
        assert seen[stage][-1] == (rows, rows), stage
    return _read_split(split.files)


def test_remote_scheduler_with_two_worker_processes(parts, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with process_cluster(tmp_path / "dask", workers=2, env=env) as (address, pids):
        remote = _stream(DaskConfig(address=address), parts, tmp_path / "remote")
        local = _stream(DaskConfig(workers=1, threads_per_worker=2), parts, tmp_path / "local")
        pd.testing.assert_frame_equal(remote, local)
        assert all(psutil.pid_exists(p) for p in pids)  # the remote cluster is left running


def test_dead_scheduler_address_is_named() -> None:
    address = f"tcp://127.0.0.1:{_free_port()}"
    with pytest.raises(ClusterUnreachable, match=address.replace(".", r"\.")):
        with dask_client(DaskConfig(address=address)):
            pass
