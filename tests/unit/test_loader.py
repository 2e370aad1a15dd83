"""ParquetBatches: every row once per epoch, seeded shuffles that mix files, file order for
scoring, bounded buffers, per-chunk schema checks, and training on it through `fit`."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from models import build_model
from models.metrics import roc_auc
from models.schema import Field, InputSchema
from models.trainer import TrainConfig, fit, predict_proba
from tasks.loader import ParquetBatches

SCHEMA = InputSchema(
    categorical=(Field("user", 40), Field("item", 30), Field("noise", 20)),
    continuous=("x0", "x1"),
    crosses=(Field("user_x_item", 64),),
)
ROWS_PER_DAY = (700, 650, 720, 610)  # uneven: row groups and buffers do not divide batches
ROW_GROUP = 100


def write_days(directory, rows=ROWS_PER_DAY, seed=0, bad_user_at=None):
    """One file per day, planted logit -1 + w[user] + 0.8 x0; row_id counts rows across files.
    `bad_user_at` (a row_id) gets the out-of-range user id 40."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1.5, 40)
    files, start = [], 0
    for day, n in enumerate(rows):
        user = rng.integers(0, 40, n)
        x = rng.normal(size=(n, 2)).astype(np.float32)
        y = rng.random(n) < 1 / (1 + np.exp(-(-1 + w[user] + 0.8 * x[:, 0])))
        row_id = np.arange(start, start + n)
        if bad_user_at is not None and start <= bad_user_at < start + n:
            user[bad_user_at - start] = 40
        table = pa.table({
            "user": user.astype(np.int32),  # the workflow may write int32 ids
            "item": rng.integers(0, 30, n),
            "noise": rng.integers(0, 20, n),
            "x0": x[:, 0], "x1": x[:, 1],
            "user_x_item": rng.integers(0, 64, n),
            "click": y.astype(np.float32),
            "row_id": row_id,
            "day": np.full(n, day),
        })
        path = directory / f"part_{day:02d}.parquet"
        pq.write_table(table, path, row_group_size=ROW_GROUP)
        files.append(path)
        start += n
    return files


def source(files, **kwargs):
    kwargs = {"batch_size": 128, "seed": 0, "shuffle_row_groups": 4, "extra": ["row_id", "day"], **kwargs}
    return ParquetBatches.for_schema(files, SCHEMA, "click", **kwargs)


def ids(src, epoch):
    return torch.cat([b["row_id"] for b in src.batches(epoch)]).numpy()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_days(tmp_path_factory.mktemp("days"))


@pytest.mark.parametrize("prefetch", [True, False])
def test_every_row_once_per_epoch_in_full_batches(files, prefetch):
    src = source(files, prefetch=prefetch)
    n = sum(ROWS_PER_DAY)
    assert src.rows == n
    for epoch in (None, 1, 2):
        batches = list(src.batches(epoch))
        got = torch.cat([b["row_id"] for b in batches]).numpy()
        assert np.array_equal(np.sort(got), np.arange(n)), epoch
        sizes = [b["label"].shape[0] for b in batches]
        assert set(sizes[:-1]) == {128} and sizes[-1] == n - 128 * (len(sizes) - 1)
        b = batches[0]
        assert (b["cat"].dtype, b["cont"].dtype, b["cross"].dtype, b["label"].dtype) == (
            torch.int64, torch.float32, torch.int64, torch.float32)
        assert (b["cat"].shape, b["cont"].shape, b["cross"].shape) == ((128, 3), (128, 2), (128, 1))


def test_order_depends_on_seed_and_epoch_only(files):
    a, b = source(files, prefetch=True), source(files, prefetch=False)
    assert np.array_equal(ids(a, None), np.arange(a.rows))  # scoring: file order
    assert np.array_equal(ids(a, 1), ids(b, 1))  # same seed: same order, prefetch or not
    assert not np.array_equal(ids(a, 1), ids(a, 2))
    assert not np.array_equal(ids(a, 1), ids(source(files, seed=1), 1))


def test_a_batch_mixes_days(files):
    src = source(files)
    days_per_batch = [len(torch.unique(b["day"])) for b in src.batches(1)]
    assert min(days_per_batch) >= 2 and np.mean(days_per_batch) >= 2.5, days_per_batch
    in_order = [len(torch.unique(b["day"])) for b in src.batches(None)]
    assert np.mean(in_order) < 1.2  # sanity: the files really are one day each


def test_memory_is_bounded_by_the_buffer(files, monkeypatch):
    src = source(files, shuffle_row_groups=3)
    sizes = []
    load = ParquetBatches._load

    def spy(self, *args):
        buf = load(self, *args)
        sizes.append(buf["label"].shape[0])
        return buf

    monkeypatch.setattr(ParquetBatches, "_load", spy)
    assert len(ids(src, 1)) == src.rows
    assert max(sizes) <= 3 * ROW_GROUP and len(sizes) == len(src.plan(1))


def test_an_abandoned_epoch_stops_its_prefetch_thread(files):
    before = threading.active_count()
    it = source(files, prefetch=True).batches(1)
    next(it)
    it.close()
    assert threading.active_count() == before


def test_predictions_follow_file_order(files):
    model = build_model("deep", SCHEMA, {"hidden": [16]}, seed=0)
    src = source(files, batch_size=100)
    tables = [pq.read_table(f) for f in files]
    col = lambda name: np.concatenate([t.column(name).to_numpy() for t in tables])  # noqa: E731
    whole = {
        "cat": torch.from_numpy(np.stack([col(f.name) for f in SCHEMA.categorical], 1).astype(np.int64)),
        "cont": torch.from_numpy(np.stack([col(c) for c in SCHEMA.continuous], 1)),
        "cross": torch.from_numpy(np.stack([col(f.name) for f in SCHEMA.crosses], 1)),
    }
    np.testing.assert_allclose(predict_proba(model, src), predict_proba(model, whole), rtol=1e-6)
    assert np.array_equal(src.column("row_id"), np.arange(src.rows))
    assert np.array_equal(src.column("click"), col("click"))


def test_fit_on_parquet_learns_the_planted_signal_deterministically(tmp_path, files):
    val = source(write_days(tmp_path, rows=(800,), seed=0), extra=[])
    config = TrainConfig(epochs=3, batch_size=128, threads=1, seed=3)
    states, aucs = [], []
    for prefetch in (True, False):
        model = build_model("wide_deep", SCHEMA, {"embedding_dim": 8, "hidden": [16]}, seed=0)
        result = fit(model, source(files, seed=3, prefetch=prefetch), val, config)
        states.append(model.state_dict())
        aucs.append(result.best_val_auc)
        y = np.concatenate([b["label"].numpy() for b in val.batches(None)])
        assert roc_auc(y, predict_proba(model, val)) == pytest.approx(result.best_val_auc, abs=1e-9)
    assert aucs[0] > 0.65, aucs  # the planted user effect alone gives ~0.75
    assert aucs[0] == aucs[1]
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_early_stopping_on_parquet_restores_the_best_weights(tmp_path):
    rng = np.random.default_rng(0)
    files = write_days(tmp_path, rows=(300, 300), seed=1)
    for f in files:  # shuffled labels: validation loss can only get worse
        t = pq.read_table(f)
        t = t.set_column(t.schema.get_field_index("click"), "click",
                         pa.array(rng.permutation(t.column("click").to_numpy())))
        pq.write_table(t, f, row_group_size=ROW_GROUP)
    train, val = source(files[:1], batch_size=32), source(files[1:], batch_size=32)
    model = build_model("deep", SCHEMA, {"hidden": [64], "dropout": 0.0}, seed=0)
    result = fit(model, train, val, TrainConfig(epochs=30, batch_size=32, lr=1e-2, patience=2, threads=1))
    assert len(result.history) == result.best_epoch + 2 < 30
    y = np.concatenate([b["label"].numpy() for b in val.batches(None)])
    from models.metrics import log_loss
    assert log_loss(y, predict_proba(model, val)) == pytest.approx(result.best_val_logloss, abs=1e-9)


def test_an_out_of_range_id_names_the_field_file_and_row_group(tmp_path):
    files = write_days(tmp_path, bad_user_at=700 + 650 + 250)  # day 2, row 250: row group 2
    model = build_model("wide", SCHEMA)
    with pytest.raises(ValueError, match=r"train: 'cat' field 'user' has ids outside \[0, 40\) "
                                         r"\(in .*part_02.parquet row group 2\)"):
        fit(model, source(files), source(files[:1]), TrainConfig(epochs=1, threads=1))
    with pytest.raises(ValueError, match=r"predict: 'cat' field 'user'.*part_02.parquet row group 2"):
        predict_proba(model, source(files))


def test_bad_files_fail_when_the_source_is_built(tmp_path):
    files = write_days(tmp_path, rows=(50,))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['clicked'\]"):
        ParquetBatches.for_schema(files, SCHEMA, "clicked")
    t = pq.read_table(files[0])
    t = t.set_column(t.schema.get_field_index("item"), "item", pa.array(np.full(50, 1.5)))
    pq.write_table(t, files[0])
    with pytest.raises(ValueError, match=r"\['item \(double\)'\] must be integer"):
        ParquetBatches.for_schema(files, SCHEMA, "click")


def test_nulls_in_an_id_column_are_refused(tmp_path):
    files = write_days(tmp_path, rows=(50,))
    t = pq.read_table(files[0])
    item = pa.array([None] + list(range(1, 50)), type=pa.int64())
    pq.write_table(t.set_column(t.schema.get_field_index("item"), "item", item), files[0])
    with pytest.raises(ValueError, match="column 'item' has 1 null"):
        list(source(files).batches(1))


def test_check_runs_once_per_buffer_not_per_batch(files):
    src = source(files, shuffle_row_groups=5)
    seen = []
    batches = list(src.batches(1, check=lambda chunk: seen.append(chunk["label"].shape[0])))
    assert len(seen) == len(src.plan(1)) < len(batches)
    assert sum(seen) == src.rows
