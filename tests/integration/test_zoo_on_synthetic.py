"""Every architecture of the zoo learns what the synthetic world plants, beyond what a linear
model and item popularity can: validation AUC above `wide` and above popularity.

Data: 8 days x 20,000 rows of synthetic_clicks (seed 7); the workflow is fitted on days 1-6,
every model trained 4 epochs (early stopping on day 7's logloss, best epoch kept) with its
default hyper-parameters, and scored on day 7.

`ncf` and `two_tower` read only the user and item fields by design (collaborative filtering,
retrieval towers): against `wide` on all fields they would be judged on the position and
device x hour effects they never see. Their linear baseline is `wide` on the same user and
item fields, which is the comparison that says whether the architecture learned anything a
linear model cannot.
"""

from __future__ import annotations

import dataclasses
from datetime import date

import pytest
import torch

from models import ARCHITECTURES, build_model
from models.baselines import popularity_scores
from models.metrics import roc_auc
from models.trainer import TrainConfig, fit

pytestmark = pytest.mark.slow

CONFIG = TrainConfig(epochs=4, seed=0, threads=2)
USER_ITEM_ONLY = ("ncf", "two_tower", "split_network")
# Measured at seed 0: +0.007 (dcn; +0.006 to +0.011 over seeds 0-2) to +0.023 (dlrm) over
# `wide` at 0.777, and at least +0.12 over popularity at 0.608. These bounds leave room for
# platform noise and still fail a model that learned nothing beyond a linear one.
MARGIN_OVER_WIDE = 0.004
MARGIN_OVER_POPULARITY = 0.05


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from feature_store.generators.synthetic import generate_synthetic
    from feature_store.partitions import read_days
    from feature_store.spec import load_spec
    from tasks.preprocess import prepare_frames

    root = tmp_path_factory.mktemp("zoo")
    generate_synthetic(root, start=date(2026, 1, 1), days=8, rows_per_day=20_000, seed=7)
    spec = load_spec("synthetic_clicks")
    days = [date(2026, 1, d) for d in range(1, 9)]
    train, val = read_days(root, spec.name, days[:6]), read_days(root, spec.name, days[6:7])
    prepared = prepare_frames(spec, train, val, read_days(root, spec.name, days[7:]))
    y_val = prepared.val["label"].numpy()
    item = spec.item_columns[0]
    popularity = roc_auc(y_val, popularity_scores(train[item], train[spec.label], val[item]))
    return {"prepared": prepared, "popularity_auc": popularity}


def _val_auc(arch: str, schema, train, val, hparams: dict | None = None) -> float:
    model = build_model(arch, schema, hparams, seed=0)
    return fit(model, train, val, CONFIG).best_val_auc


def _user_item_only(prepared):
    """The schema and splits reduced to the user and item fields (no crosses, no continuous)."""
    schema = prepared.schema
    keep = schema.categorical_indices(schema.user_fields + schema.item_fields)
    reduced = dataclasses.replace(schema, categorical=tuple(schema.categorical[i] for i in keep),
                                  crosses=(), continuous=())
    index = torch.tensor(keep)

    def cut(batch):
        n = batch["label"].shape[0]
        return {"cat": batch["cat"][:, index], "cont": torch.zeros(n, 0), "cross": torch.zeros(n, 0, dtype=torch.int64),
                "label": batch["label"]}

    return reduced, cut(prepared.train), cut(prepared.val)


@pytest.fixture(scope="module")
def wide_auc(data):
    p = data["prepared"]
    full = _val_auc("wide", p.schema, p.train, p.val)
    reduced, train, val = _user_item_only(p)
    same_fields = _val_auc("wide", reduced, train, val, {"use_continuous": False, "use_crosses": False})
    print(f"\nwide val AUC {full:.4f}; on user/item fields only {same_fields:.4f}; "
          f"popularity {data['popularity_auc']:.4f}")
    return {"all fields": full, "user/item fields": same_fields}


def test_wide_itself_beats_popularity(data, wide_auc):
    assert wide_auc["all fields"] > data["popularity_auc"] + MARGIN_OVER_POPULARITY


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a != "wide"])
def test_architecture_beats_wide_and_popularity(arch, data, wide_auc):
    p = data["prepared"]
    auc = _val_auc(arch, p.schema, p.train, p.val)
    baseline = wide_auc["user/item fields" if arch in USER_ITEM_ONLY else "all fields"]
    print(f"\n{arch}: val AUC {auc:.4f} (wide {baseline:.4f}, +{auc - baseline:.4f}; "
          f"popularity {data['popularity_auc']:.4f})")
    assert auc > baseline + MARGIN_OVER_WIDE, (arch, auc, baseline)
    assert auc > data["popularity_auc"] + MARGIN_OVER_POPULARITY, (arch, auc, data["popularity_auc"])
