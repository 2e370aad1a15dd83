"""Warm start across refit vocabularies against a real SQLite MLflow registry: night 1 trains
and promotes a `wide_deep` champion, night 2 (a window one day later, so Categorify refits and
renumbers) starts its challengers from it through the registered bundle."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
import torch

from feature_store.generators.synthetic import generate_synthetic
from feature_store.id_maps import NONE, id_maps
from feature_store.spec import Cross, load_spec
from feature_store.workflow import Preprocessor
from models import build_model
from models.trainer import TrainConfig, evaluate, fit
from tasks import registry, tracking
from tasks.handoff import Night
from tasks.ingest import load_window
from tasks.preprocess import prepare
from tasks.settings import get_settings
from tasks.train import train_candidate
from tasks.warm_start import OFF, load_source, start_from

pytestmark = pytest.mark.slow

DATASET = "synthetic_clicks"
NAME = registry.registered_model_name(DATASET)
NIGHT1, NIGHT2 = date(2026, 3, 5), date(2026, 3, 6)  # staging days 03-04 and 03-05
TRAIN = TrainConfig(epochs=2, batch_size=256, threads=2, seed=0)


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECLOOP_HOME", str(home))
        mp.setenv("RECLOOP_SETTINGS_FILE", str(home / "absent.env"))
        for var in ("RECLOOP_DATA_ROOT", "RECLOOP_TRACKING_URI", "RECLOOP_REGISTRY_URI", "RECLOOP_WARM_START"):
            mp.delenv(var, raising=False)
        settings = get_settings(window_days=3)
        generate_synthetic(settings.resolved_data_root, start=date(2026, 3, 1), days=5, rows_per_day=3000, seed=3)
        spec = load_spec(DATASET)
        client = tracking.configure(settings)
        out = {"spec": spec, "client": client}
        for key, run_date in (("one", NIGHT1), ("two", NIGHT2)):
            window = load_window(settings.resolved_data_root, spec, run_date, settings.window_days)
            data = prepare(window, spec, home / f"work-{key}", settings.stream, train=TRAIN, log=lambda _: None)
            exp_id, parent = tracking.start_night(client, DATASET, f"night-{run_date}", {},
                                                  tracking.artifact_location(settings))
            tags = {"dataset": DATASET, "validation_day": str(window.val_day)}
            out[key] = (data, Night(DATASET, run_date, tags).started(exp_id, parent), window)
        data, night, _ = out["one"]
        champion = train_candidate("wide_deep", data, spec, TRAIN, None, night, log=lambda _: None)
        assert not champion.warm_start.warm and champion.warm_start.fallback == f"warm_start={OFF}"
        mv = registry.register_version(client, NAME, DATASET, champion.model_uri, champion.run_id,
                                       {"arch": "wide_deep", "validation_day": str(out["one"][2].val_day)})
        registry.promote(client, NAME, str(mv.version), approved_by="test", reason="night 1")
        out["champion"], out["version"] = champion, str(mv.version)
        yield out


def _source(nights, key="two", mode="auto"):
    data, _, window = nights[key]
    return load_source(nights["client"], NAME, data.preprocessor, mode, window.holdout_day)


def _rows(model, field):
    """The deep embedding table and the wide weights of `field` (an item), in id order."""
    out = []
    for table in (model.deep.inputs.embedding, model.wide.weights):
        i = table.names.index(field)
        offset = sum(table.cardinalities[:i])
        out.append(table.embedding.weight[offset : offset + table.cardinalities[i]].detach())
    return out


def test_a_value_whose_id_changed_gets_the_champions_vector(nights):
    source = _source(nights)
    assert source.model is not None and source.version == nights["version"], source.unavailable
    data = nights["two"][0]
    old_vocab, new_vocab = _vocab(nights["one"][0], "item_id"), _vocab(data, "item_id")
    moved = [v for v in new_vocab if v in old_vocab and old_vocab.get_loc(v) != new_vocab.get_loc(v)]
    assert moved, "the refit renumbered nothing: the test data do not exercise the remap"
    old_id, new_id = 3 + old_vocab.get_loc(moved[0]), 3 + new_vocab.get_loc(moved[0])

    model = build_model("wide_deep", data.schema, seed=0)
    started = start_from(model, "wide_deep", None, source)
    assert started.warm and started.from_version == nights["version"] and started.fallback == ""
    for new_table, old_table in zip(_rows(model, "item_id"), _rows(source.model, "item_id")):
        assert torch.equal(new_table[new_id], old_table[old_id])
    # hashed crosses keep their ids: all of their rows are the champion's
    assert started.copied_share["user_segment_x_item_category"] == 1.0
    assert 0 < started.copied_share["item_id"] < 1  # some items are new tonight
    assert started.not_copied == {}
    maps = source.id_maps.old_ids["item_id"]
    assert maps[new_id] == old_id and (maps == NONE).any()


def _vocab(data, column):
    from merlin.dag import iter_nodes

    from feature_store.categorify import FastCategorify

    ops = [n.op for n in iter_nodes([data.preprocessor.workflow.output_node]) if isinstance(n.op, FastCategorify)]
    return next(op.vocabs[column] for op in ops if column in op.vocabs)


def test_warm_start_on_the_champions_own_data_starts_at_its_validation_logloss(nights):
    """Night 1's data again (a refit of the same window would give the same vocabularies): the
    warm model, before its first step, scores the validation day like the champion did."""
    data = nights["one"][0]
    source = _source(nights, "one")
    model = build_model("wide_deep", data.schema, seed=123)
    assert start_from(model, "wide_deep", None, source).warm
    logloss, auc = evaluate(model, data.val)
    champion_run = nights["client"].get_run(nights["champion"].run_id).data.metrics
    assert logloss == pytest.approx(champion_run["val_logloss"], abs=1e-4)
    assert auc == pytest.approx(champion_run["val_auc"], abs=1e-4)


def test_night_two_logs_warm_and_fallback_runs(nights):
    data, night, _ = nights["two"]
    client, source = nights["client"], _source(nights)
    one_epoch = TrainConfig(epochs=1, batch_size=256, threads=2, seed=0)
    warm = train_candidate("wide_deep", data, nights["spec"], one_epoch, None, night, log=lambda _: None,
                           warm_source=source)
    run = client.get_run(warm.run_id).data
    assert run.params["warm_start"] == "auto" and run.params["warm_start.from_version"] == nights["version"]
    assert run.tags["warm_start.fallback"] == "none" and run.tags["warm_start.not_copied"] == "none"
    assert run.metrics["warm_start.copied_share.device_x_hour"] == 1.0
    assert 0.5 < run.metrics["warm_start.copied_share.item_id"] < 1
    # it starts near the champion: far better than a cold model's 0.5 AUC
    assert run.metrics["warm_start.initial_val_auc"] > 0.6
    curve = client.get_metric_history(warm.run_id, "epoch_val_logloss")
    assert [m.step for m in curve] == [0, 1] and curve[0].value == run.metrics["warm_start.initial_val_logloss"]

    # another architecture: a cold start with the reason on its run, and the night goes on
    deep = train_candidate("deep", data, nights["spec"], one_epoch, None, night, log=lambda _: None,
                           warm_source=source)
    run = client.get_run(deep.run_id).data
    assert run.params["warm_start.from_version"] == "none"
    assert run.tags["warm_start.fallback"] == f"champion v{nights['version']} is wide_deep, not deep"
    shares = {k: v for k, v in run.metrics.items() if k.startswith("warm_start.copied_share")}
    assert shares and set(shares.values()) == {0.0}  # nothing copied, under the same keys as the warm run
    warm_keys = set(client.get_run(warm.run_id).data.metrics)
    assert set(run.metrics) == warm_keys  # MLflow's compare view lines the two runs up
    assert run.metrics["warm_start.initial_val_auc"] < 0.6  # a cold model starts near chance


def test_warm_start_off_starts_cold(nights):
    source = _source(nights, mode=OFF)
    assert source.model is None and source.unavailable == "warm_start=off"
    data = nights["two"][0]
    model = build_model("wide_deep", data.schema, seed=0)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    started = start_from(model, "wide_deep", None, source)
    assert not started.warm and started.fallback == "warm_start=off"
    assert all(torch.equal(fresh[k], v) for k, v in model.state_dict().items())


def test_other_hyper_parameter_shapes_fall_back_with_the_reason(nights):
    data = nights["two"][0]
    model = build_model("wide_deep", data.schema, {"embedding_dim": 4}, seed=0)
    started = start_from(model, "wide_deep", {"embedding_dim": 4}, _source(nights))
    assert not started.warm
    assert started.fallback.startswith(f"champion v{nights['version']}'s hyper-parameters give other shapes: ")
    assert "deep.inputs.embedding.embedding.weight" in started.fallback


def test_a_field_defined_otherwise_tonight_is_not_copied(nights):
    """A cross with another bucket count hashes to other ids: no map, the reason instead."""
    spec = nights["spec"]
    rows = nights["two"][0].holdout_raw.head(1500)
    old = Preprocessor.fit(spec, rows)
    crosses = [spec.crosses[0], Cross(columns=spec.crosses[1].columns, buckets=400)]
    maps = id_maps(old, Preprocessor.fit(spec.model_copy(update={"crosses": crosses}), rows))
    assert maps.skipped == {"device_x_hour": "a cross of device (object), hour (int64) into 400 buckets; "
                                             "the champion's: a cross of device (object), hour (int64) into 500 buckets"}
    assert (maps.old_ids["user_segment_x_item_category"] == np.arange(2000)).all()
    assert (maps.old_ids["item_id"][3:] >= 3).all()  # the same rows: every value known


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_training_is_reproducible_from_the_seed(nights, warm):
    data = nights["two"][0]
    source = _source(nights)
    config = TrainConfig(epochs=1, batch_size=256, threads=2, seed=7)
    states = []
    for _ in range(2):
        model = build_model("wide_deep", data.schema, seed=config.seed)
        if warm:
            assert start_from(model, "wide_deep", None, source).warm
        fit(model, data.train, data.val, config)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_a_remap_that_raises_starts_cold_from_the_seed(nights, monkeypatch):
    import tasks.warm_start

    data = nights["two"][0]

    def half_done(model, champion, old_ids, skipped=None):
        with torch.no_grad():
            next(model.parameters()).add_(1.0)  # a part already copied
        raise RuntimeError("index out of range\nsecond line")

    monkeypatch.setattr(tasks.warm_start, "warm_start", half_done)
    model, started = tasks.warm_start.build("wide_deep", data.schema, None, 0, _source(nights))
    assert not started.warm
    assert started.fallback == (f"the warm start from champion v{nights['version']} failed: "
                                "RuntimeError: index out of range")
    seeded = build_model("wide_deep", data.schema, seed=0)
    assert all(torch.equal(v, seeded.state_dict()[k]) for k, v in model.state_dict().items())


def test_a_champion_that_cannot_be_loaded_means_a_cold_start(nights, tmp_path):
    client = nights["client"]
    data, _, window = nights["two"]
    name = "broken-ranker"
    gone = tmp_path / "artifacts-deleted"
    gone.mkdir()
    mv = registry.register_version(client, name, DATASET, gone.as_uri(), nights["champion"].run_id, {})
    client.set_registered_model_alias(name, registry.CHAMPION, mv.version)
    source = load_source(client, name, data.preprocessor, "auto", window.holdout_day)
    assert source.model is None and source.unavailable.startswith(f"champion v{mv.version} cannot be loaded: ")
    registry.mark_health(client, name, str(mv.version), "cannot score the staging day")
    source = load_source(client, name, data.preprocessor, "auto", window.holdout_day)
    assert source.unavailable == f"champion v{mv.version} is marked health=broken: cannot score the staging day"
    # a champion that trained on tonight's staging day (a backfill night) is not started from
    source = load_source(client, NAME, data.preprocessor, "auto", date(2026, 3, 3))
    assert source.unavailable == (f"champion v{nights['version']} trained on days up to 2026-03-03, "
                                  "tonight's staging day is 2026-03-03")
