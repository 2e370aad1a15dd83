"""The trainer: early stopping, determinism, prediction, input checks, and a planted signal
that every architecture must find."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from models import ARCHITECTURES, build_model, trainer
from models.metrics import log_loss, roc_auc
from models.optim import build_optimizers
from models.schema import Field, InputSchema
from models.trainer import TensorBatches, TrainConfig, check_batch, fit, predict_proba

SMALL = {"wide": {}, "deep": {"embedding_dim": 8, "hidden": [32, 16]},
         "wide_deep": {"embedding_dim": 8, "hidden": [32, 16]}}


def planted(n: int, seed: int) -> tuple[InputSchema, dict[str, torch.Tensor]]:
    """Clicks from a known logit with a memorisation part and a generalisation part:

        logit = -0.8 + pair[a, b] + <u_user, v_item> + 0.5 x0 + 0.7 x0 x1

    `pair` is a random table over 12 x 12 (a, b) pairs, given to the wide part as the exact
    cross a x b; the user-item dot product and the x0 x1 product are not linear in any
    input, so only the embeddings + MLP can represent them.
    """
    rng = np.random.default_rng(seed)
    n_user, n_item, n_ab, k = 40, 30, 12, 2
    user, item = rng.integers(0, n_user, n), rng.integers(0, n_item, n)
    a, b, noise = rng.integers(0, n_ab, n), rng.integers(0, n_ab, n), rng.integers(0, 20, n)
    x = rng.normal(size=(n, 2))
    u, v = rng.normal(0, 1.0, (n_user, k)), rng.normal(0, 1.0, (n_item, k))
    pair = rng.normal(0, 1.2, (n_ab, n_ab))
    logit = -0.8 + pair[a, b] + (u[user] * v[item]).sum(1) + 0.5 * x[:, 0] + 0.7 * x[:, 0] * x[:, 1]
    y = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    schema = InputSchema(
        categorical=(Field("user", n_user), Field("item", n_item), Field("a", n_ab),
                     Field("b", n_ab), Field("noise", 20)),
        continuous=("x0", "x1"),
        crosses=(Field("a_x_b", n_ab * n_ab),),
        user_fields=("user",),
        item_fields=("item",),
    )
    data = {
        "cat": torch.from_numpy(np.stack([user, item, a, b, noise], axis=1)),
        "cont": torch.from_numpy(x.astype(np.float32)),
        "cross": torch.from_numpy(a * n_ab + b)[:, None],
        "label": torch.from_numpy(y.astype(np.float32)),
    }
    return schema, data


def split(data, n_train):
    return ({k: v[:n_train] for k, v in data.items()}, {k: v[n_train:] for k, v in data.items()})


def test_train_config_is_strict():
    assert TrainConfig.from_dict({"epochs": 2, "lr": 1}).lr == 1.0
    with pytest.raises(ValueError, match="valid keys.*batch_size"):
        TrainConfig.from_dict({"epoch": 2})
    with pytest.raises(ValueError, match="'epochs' expected int"):
        TrainConfig.from_dict({"epochs": "2"})
    with pytest.raises(ValueError, match="wide_lr"):
        TrainConfig(wide_lr=-1.0)
    assert TrainConfig.from_dict({"wide_lr": None}).wide_lr is None


def test_fit_history_restores_best_weights_and_reports_speed():
    schema, data = planted(3000, seed=0)
    train, val = split(data, 2400)
    model = build_model("wide_deep", schema, SMALL["wide_deep"], seed=0)
    rows = []
    config = TrainConfig(epochs=3, batch_size=256, threads=1)
    result = fit(model, train, val, config, on_epoch=rows.append)
    assert rows == result.history and 1 <= len(rows) <= 3
    assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))
    assert set(rows[0]) == {"epoch", "train_loss", "val_logloss", "val_auc", "seconds"}
    best = min(rows, key=lambda r: r["val_logloss"])
    assert result.best_epoch == best["epoch"]
    assert (result.best_val_logloss, result.best_val_auc) == (best["val_logloss"], best["val_auc"])
    p = predict_proba(model, val)  # the restored weights give the best epoch's numbers
    y = val["label"].numpy()
    assert log_loss(y, p) == pytest.approx(result.best_val_logloss, abs=1e-9)
    assert roc_auc(y, p) == pytest.approx(result.best_val_auc, abs=1e-9)
    assert result.train_samples_per_s > 0
    assert result.steps_by_threads == {1: len(rows) * 10}  # 2,400 rows in batches of 256, one thread
    assert torch.get_num_threads() == 1
    assert not model.training


def test_early_stopping_stops_after_patience_epochs_and_restores_the_best():
    schema, data = planted(600, seed=1)
    data["label"] = data["label"][torch.randperm(600, generator=torch.Generator().manual_seed(0))]
    train, val = split(data, 300)  # shuffled labels: validation loss can only get worse
    model = build_model("deep", schema, {"hidden": [64], "dropout": 0.0}, seed=0)
    config = TrainConfig(epochs=30, batch_size=32, lr=1e-2, patience=2, threads=1)
    result = fit(model, train, val, config)
    assert len(result.history) < 30
    assert len(result.history) == result.best_epoch + 2
    p = predict_proba(model, val)
    assert log_loss(val["label"].numpy(), p) == pytest.approx(result.best_val_logloss, abs=1e-9)


def test_fit_is_deterministic_and_leaves_the_global_rng_alone():
    schema, data = planted(1500, seed=2)
    train, val = split(data, 1200)
    config = TrainConfig(epochs=2, batch_size=128, threads=1, seed=5)
    rng_state = torch.get_rng_state()
    results, states = [], []
    for _ in range(2):
        model = build_model("wide_deep", schema, SMALL["wide_deep"], seed=1)  # dropout 0.1 on
        results.append(fit(model, train, val, config))
        states.append(model.state_dict())
    assert torch.equal(rng_state, torch.get_rng_state())
    timeless = [[{k: v for k, v in row.items() if k != "seconds"} for row in res.history]
                for res in results]
    assert timeless[0] == timeless[1]
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    other = fit(build_model("wide_deep", schema, SMALL["wide_deep"], seed=1), train, val,
                dataclasses.replace(config, seed=6))
    assert other.history[0]["train_loss"] != results[0].history[0]["train_loss"]


def test_predict_proba_matches_the_model_in_chunks():
    schema, data = planted(1000, seed=3)
    model = build_model("deep", schema, SMALL["deep"], seed=0)
    model.train()  # predict_proba must switch to eval (dropout off)
    p = predict_proba(model, data, batch_size=97)
    assert p.dtype == np.float64 and p.shape == (1000,)
    assert ((p > 0) & (p < 1)).all()
    assert not model.training
    with torch.no_grad():
        expected = torch.sigmoid(model(data).double()).numpy()
    np.testing.assert_allclose(p, expected, rtol=1e-6)
    no_label = {k: v for k, v in data.items() if k != "label"}
    np.testing.assert_allclose(predict_proba(model, no_label), p, rtol=1e-6)  # other chunking


def test_predict_proba_stays_inside_the_open_interval():
    schema, data = planted(10, seed=4)
    model = build_model("wide", schema)
    with torch.no_grad():
        model.linear.bias.fill_(1e4)
    p = predict_proba(model, data)
    assert (p < 1).all() and (p > 0.999).all()


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.pop("cross"), "missing"),
        (lambda d: d.__setitem__("cat", d["cat"].int()), "int64"),
        (lambda d: d["cat"].__setitem__((3, 1), 30), "field 'item'"),
        (lambda d: d["cross"].__setitem__((0, 0), -1), "field 'a_x_b'"),
        (lambda d: d["cont"].__setitem__((0, 0), float("nan")), "NaN"),
        (lambda d: d.__setitem__("label", d["label"] * 2), "0 or 1"),
        (lambda d: d.__setitem__("cont", d["cont"][:, :1]), "shape"),
    ],
)
def test_bad_batches_fail_with_a_clear_message(mutate, match):
    schema, data = planted(20, seed=5)
    mutate(data)
    with pytest.raises(ValueError, match=match):
        check_batch(schema, data, need_label=True, where="train")


def test_predict_proba_rejects_out_of_range_ids():
    schema, data = planted(20, seed=7)
    data["cat"][5, 2] = 12  # field 'a' has 12 ids
    with pytest.raises(ValueError, match="predict: 'cat' field 'a'"):
        predict_proba(build_model("deep", schema), data)


def test_fit_rejects_bad_training_data():
    schema, data = planted(40, seed=6)
    train, val = split(data, 30)
    train["cat"] = train["cat"].clone()
    train["cat"][0, 0] = 40  # user cardinality is 40
    with pytest.raises(ValueError, match="train: 'cat' field 'user'"):
        fit(build_model("wide", schema), train, val, TrainConfig(epochs=1, threads=1))


def test_planted_signal_is_learned_and_wide_deep_is_best():
    schema, data = planted(16_000, seed=0)
    train, val = split(data, 12_000)
    config = TrainConfig(epochs=6, batch_size=256, threads=1, seed=0)
    auc = {}
    for arch, params in SMALL.items():
        model = build_model(arch, schema, params, seed=0)
        auc[arch] = fit(model, train, val, config).best_val_auc
    assert min(auc.values()) > 0.62, auc
    assert auc["wide_deep"] >= max(auc["wide"], auc["deep"]) - 0.005, auc


def test_bfloat16_training_learns_the_planted_signal_as_well_and_predicts_in_float32():
    schema, data = planted(16_000, seed=0)
    train, val = split(data, 12_000)
    auc = {}
    for precision in ("fp32", "bf16"):
        model = build_model("wide_deep", schema, SMALL["wide_deep"], seed=0)
        auc[precision] = fit(model, train, val, TrainConfig(epochs=4, batch_size=256, threads=1,
                                                           precision=precision)).best_val_auc
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert predict_proba(model, val).dtype == np.float64
    assert auc["bf16"] > auc["fp32"] - 0.005, auc
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="fp16")


def test_tensor_batches_every_row_once_seeded_per_epoch(monkeypatch):
    schema, data = planted(1000, seed=8)
    data["row_id"] = torch.arange(1000)
    src = TensorBatches(data, batch_size=96, seed=4)
    order = {e: torch.cat([b["row_id"] for b in src.batches(e)]) for e in (None, 1, 2)}
    assert torch.equal(order[None], torch.arange(1000))
    for e in (1, 2):
        assert torch.equal(order[e].sort().values, torch.arange(1000))
    assert not torch.equal(order[1], order[2])
    again = torch.cat([b["row_id"] for b in TensorBatches(data, batch_size=96, seed=4).batches(1)])
    assert torch.equal(order[1], again)
    monkeypatch.setattr(trainer, "GATHER_ROWS", 200)  # gathered two batches at a time: the same batches
    blocks = list(TensorBatches(data, batch_size=96, seed=4).batches(1))
    assert [b["row_id"].shape[0] for b in blocks] == [96] * 10 + [40]
    assert torch.equal(torch.cat([b["row_id"] for b in blocks]), order[1])
    assert all(torch.equal(b["cat"], data["cat"][b["row_id"]]) for b in blocks)
    checked = []
    check = checked.append
    assert [b["cat"].shape[0] for b in src.batches(None, check=check)][-1] == 1000 - 96 * 10
    assert len(checked) == 1 and checked[0]["cat"].shape[0] == 1000  # one check per chunk
    for epoch in (1, 2, None):  # the split is loaded once: each check runs on it once
        list(src.batches(epoch, check=check))
    assert len(checked) == 1
    other = []
    list(src.batches(1, check=other.append))
    assert len(other) == 1


def test_tensor_batches_checked_once_still_fail_a_bad_split_every_epoch():
    schema, data = planted(300, seed=8)
    data["cat"][7, 0] = schema.categorical[0].cardinality  # one id past its field's range
    src = TensorBatches(data, batch_size=64)
    check = trainer.chunk_check(schema, "train")
    for epoch in (1, 2):
        with pytest.raises(ValueError, match="ids outside"):
            next(src.batches(epoch, check=check))


def test_fit_accepts_a_batch_source_like_a_dict():
    schema, data = planted(1500, seed=2)
    train, val = split(data, 1200)
    config = TrainConfig(epochs=2, batch_size=128, threads=1, seed=5)
    results = []
    for wrap in (False, True):
        model = build_model("wide_deep", schema, SMALL["wide_deep"], seed=1)
        args = (TensorBatches(train, 128, seed=5), TensorBatches(val, 8192)) if wrap else (train, val)
        results.append([{k: v for k, v in r.items() if k != "seconds"} for r in fit(model, *args, config).history])
    assert results[0] == results[1]


def test_on_progress_is_throttled_and_ends_at_the_rows_done(monkeypatch):
    import models.trainer as trainer

    schema, data = planted(1000, seed=9)
    train, val = split(data, 800)
    config = TrainConfig(epochs=3, batch_size=100, threads=1, patience=5)
    for interval, expect_calls in ((0.0, 1 + 3 * 8 + 1), (1e9, 2)):
        monkeypatch.setattr(trainer, "_PROGRESS_INTERVAL_S", interval)
        calls: list[tuple[int, int]] = []
        fit(build_model("wide", schema), train, val, config,
            on_progress=lambda d, t, calls=calls: calls.append((d, t)))
        assert len(calls) == expect_calls, interval
        assert calls[0] == (0, 2400) and calls[-1] == (2400, 2400)
        assert [d for d, _ in calls] == sorted(d for d, _ in calls)


class FakeClock:
    """Each step takes `per_row[threads] * rows` seconds; the tuner reads time only through this."""

    def __init__(self, per_row):
        self.per_row, self.now = per_row, 0.0

    def __call__(self):
        return self.now

    def step(self, tuner, rows=100):
        threads = tuner.threads()
        self.now += self.per_row[threads] * rows
        tuner.done(rows)
        return threads


@pytest.mark.parametrize("faster", [1, 2])
def test_thread_tuner_keeps_the_faster_count_and_probes_again(faster):
    before = torch.get_num_threads()
    clock = FakeClock({1: 1e-3 if faster == 1 else 3e-3, 2: 3e-3 if faster == 1 else 1e-3})
    from models.trainer import ThreadTuner

    tuner = ThreadTuner(2, probe_steps=3, reprobe_s=40.0, warmup_steps=2, clock=clock)
    try:
        probed = [clock.step(tuner) for _ in range(14)]
        # two warm-up steps, then turns of two steps per count (the second of each timed)
        assert probed == [2, 2, 2, 2, 1, 1, 2, 2, 1, 1, 2, 2, 1, 1]
        assert not tuner.probing and torch.get_num_threads() == faster
        start = clock.now
        kept = []
        while not tuner.probing:  # the first pick is checked again after reprobe_s / 4...
            kept.append(clock.step(tuner))
        assert set(kept[:-1]) == {faster} and kept[-1] == 2  # the probe's first turn: 2 threads
        assert 10.0 <= clock.now - start < 11.0
        while tuner.probing:
            clock.step(tuner)
        start = clock.now
        clock.per_row = {1: clock.per_row[2], 2: clock.per_row[1]}  # the load changed
        kept = []
        while not tuner.probing:  # ...then every reprobe_s, where it switches
            kept.append(clock.step(tuner))
        assert set(kept[:-1]) == {faster}
        assert 40.0 <= clock.now - start < 41.0
        while tuner.probing:
            clock.step(tuner)
        assert {clock.step(tuner) for _ in range(10)} == {3 - faster}
    finally:
        torch.set_num_threads(before)
    fixed = ThreadTuner(2, adapt=False, clock=clock)
    assert {clock.step(fixed) for _ in range(20)} == {2}
    assert fixed.steps == {2: 20}


@pytest.mark.parametrize("other_cores", [0.0, 1.0, None])
def test_the_first_probe_runs_only_when_other_processes_are_busy(other_cores):
    """With `others`: quiet (0.0 cores) -> no probe until reprobe_s / 4, all steps at 2 threads;
    busy (1.0) or unknown (None) -> the first probe starts once first_window_s has passed."""
    from models.trainer import ThreadTuner

    before = torch.get_num_threads()
    clock = FakeClock({1: 1e-3, 2: 5e-4})  # 100 rows per step: 0.05 s at 2 threads
    calls = []
    tuner = ThreadTuner(2, warmup_steps=2, reprobe_s=40.0, first_window_s=0.2, clock=clock,
                        others=lambda: calls.append(clock.now) or other_cores)
    try:
        counts = []
        while not tuner.probing and clock.now < 30.0:
            counts.append(clock.step(tuner))
        if other_cores == 0.0:
            assert tuner.skipped_first and len(calls) == 2 and 0.2 <= calls[0] < 0.3
            assert set(counts[:-1]) == {2} and 10.2 <= clock.now < 10.4  # the next probe: reprobe_s / 4 on
        else:
            assert not tuner.skipped_first and 0.2 <= clock.now < 0.3 and len(counts) == 5
        assert tuner.probing
    finally:
        torch.set_num_threads(before)


def test_other_load_counts_other_processes_not_this_one():
    from models.trainer import OtherLoad

    load = OtherLoad()
    end = time.monotonic() + 0.5
    while time.monotonic() < end:  # this process busy: not counted
        pass
    mine = load()
    spin = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 0.8\nwhile time.time() < end: pass"])
    spin.wait()
    theirs = load()
    assert mine is not None and theirs is not None
    assert mine < 0.5 <= theirs


@pytest.mark.parametrize(("two_threads_faster", "other_cores", "kept"),
                         [(1.1, None, 1), (1.3, None, 2), (1.3, 1.0, 1), (1.3, 0.0, 2)])
def test_thread_tuner_takes_more_threads_only_when_clearly_faster(two_threads_faster, other_cores, kept):
    """On busy cores the two counts time alike and noise decided; more threads must win by
    `margin` (1.15), and by `busy_margin` (1.5) when `others` reports busy processes (1.0 cores),
    where two threads' steps wait on a descheduled partner and a probe's few steps time them
    too kindly; a quiet report (0.0) keeps 1.15."""
    from models.trainer import ThreadTuner

    before = torch.get_num_threads()
    clock = FakeClock({1: 1e-3, 2: 1e-3 / two_threads_faster})
    others = None if other_cores is None else (lambda: other_cores)
    tuner = ThreadTuner(2, warmup_steps=0, clock=clock, others=others)
    try:
        while not tuner.probing:
            clock.step(tuner)
        while tuner.probing:
            clock.step(tuner)
        assert tuner.current == kept == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_thread_tuner_does_not_time_the_step_after_a_switch():
    """On busy cores one thread is faster, but a one-thread step right after a two-thread one
    pays for the switch (here 10x: the idle OpenMP thread spinning out its wait beside it).
    Only the second step of each turn is timed, so the pick follows the steady speed."""
    from models.trainer import ThreadTuner

    class SwitchCost(FakeClock):
        last = None

        def step(self, tuner, rows=100):
            threads = tuner.threads()
            cost = 10.0 if (self.last, threads) == (2, 1) else 1.0
            self.now += self.per_row[threads] * rows * cost
            self.last = threads
            tuner.done(rows)
            return threads

    before = torch.get_num_threads()
    clock = SwitchCost({1: 1e-3, 2: 2e-3})
    tuner = ThreadTuner(2, probe_steps=3, warmup_steps=0, clock=clock)
    try:
        while not tuner.probing:
            clock.step(tuner)
        while tuner.probing:
            clock.step(tuner)
        assert tuner.current == 1
    finally:
        torch.set_num_threads(before)


ARCHS_THREAD_INVARIANT = sorted(set(ARCHITECTURES) - {"autoint", "dhen", "ncf", "two_tower", "split_network"})


def test_thread_count_does_not_change_the_weights_of_most_architectures():
    """What `ThreadTuner` relies on: switching between 1 and 2 threads mid-training gives the
    weights of 2 threads throughout, bitwise (autoint and dhen excepted, as documented)."""
    schema, data = planted(6000, seed=3)
    before = torch.get_num_threads()
    try:
        for arch in ARCHS_THREAD_INVARIANT:
            states = []
            for threads in ([2], [1, 2]):
                torch.manual_seed(0)
                model = build_model(arch, schema, SMALL.get(arch), seed=0)
                opt = build_optimizers(model, 1e-2, 1e-2, 0.0)
                for i, batch in enumerate(TensorBatches(data, 1024, seed=0).batches(1)):
                    torch.set_num_threads(threads[i % len(threads)])
                    loss = nn.functional.binary_cross_entropy_with_logits(
                        model({k: batch[k] for k in ("cat", "cont", "cross")}), batch["label"])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                states.append(model.state_dict())
            assert all(torch.equal(states[0][k], states[1][k]) for k in states[0]), arch
    finally:
        torch.set_num_threads(before)
