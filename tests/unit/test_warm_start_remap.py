"""Warm start across refit vocabularies: the id maps (feature_store/id_maps.py) and the weight
remap (models/warm_start.py) on small hand-made vocabularies, for every architecture."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from feature_store.id_maps import NONE, vocabulary_map
from models import ARCHITECTURES, build_model
from models.layers import FusedEmbedding
from models.schema import Field, InputSchema
from models.warm_start import shape_conflicts, warm_start

ARCHS = sorted(ARCHITECTURES)

# The champion's vocabularies (id = 3 + position) and tonight's refit: "b" moved from id 4 to
# id 3, "a" from 3 to 5, "d" is gone, "e" and "f" are new.
OLD_USERS = pd.Index(["a", "b", "c", "d"])
NEW_USERS = pd.Index(["b", "e", "a", "c", "f"])
OLD_ITEMS = pd.Index([10, 11, 12])
NEW_ITEMS = pd.Index([12, 10, 13, 11])


def _schema(users: pd.Index, items: pd.Index, cross_buckets: int = 97) -> InputSchema:
    return InputSchema(
        categorical=(Field("user", 3 + len(users)), Field("item", 3 + len(items)), Field("hour", 24 + 3)),
        continuous=("price", "age"),
        crosses=(Field("user_x_item", cross_buckets),),
        user_fields=("user",),
        item_fields=("item",),
    )


OLD, NEW = _schema(OLD_USERS, OLD_ITEMS), _schema(NEW_USERS, NEW_ITEMS)
MAPS = {
    "user": vocabulary_map(OLD_USERS, NEW_USERS),
    "item": vocabulary_map(OLD_ITEMS, NEW_ITEMS),
    "hour": np.arange(27),
    "user_x_item": np.arange(97),
}


def _hparams(arch: str) -> dict:
    """BatchNorm where the architecture has it, so running statistics are part of the state."""
    fields = ARCHITECTURES[arch].config_class.__dataclass_fields__
    return {"batch_norm": True} if "batch_norm" in fields else {}


def _trained(arch: str) -> torch.nn.Module:
    """A champion whose every parameter and buffer differs from a fresh build (as if trained)."""
    model = build_model(arch, OLD, _hparams(arch), seed=1)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.add_(0.5 + torch.rand(value.shape, generator=g))
            else:
                value.add_(7)  # BatchNorm's num_batches_tracked
    return model.eval()


def test_vocabulary_map_follows_values_and_keeps_special_ids():
    m = vocabulary_map(OLD_USERS, NEW_USERS)
    assert m.dtype == np.int64 and len(m) == 3 + len(NEW_USERS)
    assert list(m[:3]) == [0, 1, 2]  # padding, null, OOV
    # new id 3 is "b" (old 4), 4 is "e" (new), 5 is "a" (old 3), 6 "c" (old 5), 7 "f" (new)
    assert list(m[3:]) == [4, NONE, 3, 5, NONE]


def test_vocabulary_map_matches_ints_and_floats_and_pads_to_cardinality():
    # An int column that had nulls in one window is float in the other.
    m = vocabulary_map(pd.Index([5, 7]), pd.Index([7.0, 9.0, 5.0]))
    assert list(m) == [0, 1, 2, 4, NONE, 3]
    # An empty vocabulary still has its one placeholder row.
    assert list(vocabulary_map(pd.Index(["x"]), pd.Index([], dtype=object), cardinality=4)) == [0, 1, 2, NONE]
    assert list(vocabulary_map(pd.Index(["x"]), pd.Index([1, 2]))) == [0, 1, 2, NONE, NONE]  # no common type


def test_a_value_whose_id_changed_gets_the_champions_vector():
    champion = _trained("deep")
    model = build_model("deep", NEW, _hparams("deep"), seed=2)
    fresh = model.inputs.embedding.embedding.weight.detach().clone()
    report = warm_start(model, champion, MAPS)
    old_w = champion.inputs.embedding.embedding.weight
    new_w = model.inputs.embedding.embedding.weight
    old_off, new_off = champion.inputs.embedding.offsets, model.inputs.embedding.offsets
    user, item = 0, 1  # field positions
    # "a": id 3 for the champion, id 5 tonight; item 12: id 5 -> id 3
    assert torch.equal(new_w[new_off[user] + 5], old_w[old_off[user] + 3])
    assert torch.equal(new_w[new_off[item] + 3], old_w[old_off[item] + 5])
    # "e" is new: it keeps the fresh initialisation
    assert torch.equal(new_w[new_off[user] + 4], fresh[new_off[user] + 4])
    assert report.copied_share["user"] == pytest.approx(6 / 8)  # 3 special ids + b, a, c of 8 rows
    assert report.copied_share["item"] == pytest.approx(6 / 7)
    assert report.copied_share["hour"] == 1.0


@pytest.mark.parametrize("arch", ARCHS)
def test_warm_model_scores_known_values_exactly_like_the_champion(arch):
    """Rows whose values both vocabularies know get the champion's very logits, through the
    renumbered ids: what 'starts at the champion's loss' means, for every architecture."""
    champion = _trained(arch)
    model = build_model(arch, NEW, _hparams(arch), seed=2)
    report = warm_start(model, champion, MAPS)
    assert set(report.copied) | set(report.not_copied) >= set(model.state_dict())
    assert report.not_copied == {}, report.not_copied

    g = torch.Generator().manual_seed(0)
    n = 50
    known_users = torch.tensor([3, 4, 5])  # a, b, c: champion ids
    known_items = torch.tensor([3, 4, 5])
    old_batch = {
        "cat": torch.stack([known_users[torch.randint(0, 3, (n,), generator=g)],
                            known_items[torch.randint(0, 3, (n,), generator=g)],
                            torch.randint(0, 27, (n,), generator=g)], dim=1),
        "cont": torch.randn(n, 2, generator=g),
        "cross": torch.randint(0, 97, (n, 1), generator=g),
    }
    inverse = {f: {int(o): j for j, o in enumerate(MAPS[f]) if o >= 0} for f in ("user", "item")}
    new_cat = old_batch["cat"].clone()
    new_cat[:, 0] = torch.tensor([inverse["user"][int(i)] for i in old_batch["cat"][:, 0]])
    new_cat[:, 1] = torch.tensor([inverse["item"][int(i)] for i in old_batch["cat"][:, 1]])
    assert not torch.equal(new_cat, old_batch["cat"])  # the ids really moved
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model({**old_batch, "cat": new_cat}), champion(old_batch), rtol=0, atol=1e-6)


def test_every_state_tensor_is_accounted_for_and_mismatches_say_why():
    champion = _trained("wide_deep")
    schema = InputSchema(  # a new continuous column: the deep tower's first layer grows
        categorical=NEW.categorical, continuous=("price", "age", "weight"), crosses=(Field("user_x_item", 50),))
    model = build_model("wide_deep", schema, _hparams("wide_deep"), seed=2)
    maps = {k: v for k, v in MAPS.items() if k != "user_x_item"}
    report = warm_start(model, champion, maps, skipped={"user_x_item": "hashed into 50 buckets, the champion's 97"})
    state = set(model.state_dict())
    assert state <= set(report.copied) | {k.split("[")[0] for k in report.not_copied}
    first = "deep.mlp.layers.0.weight"
    assert first in report.not_copied and "vs the champion's" in report.not_copied[first]
    assert report.not_copied["wide.weights.embedding.weight[user_x_item]"] == "hashed into 50 buckets, the champion's 97"
    assert report.copied_share["user_x_item"] == 0.0
    later = "deep.mlp.layers.4.weight"  # the second Linear (after BatchNorm, ReLU, Dropout): copied
    assert later in report.copied and torch.equal(model.state_dict()[later], champion.state_dict()[later])
    bn = "deep.mlp.layers.1.running_mean"
    assert bn in report.copied and torch.equal(model.state_dict()[bn], champion.state_dict()[bn])


def test_a_table_of_another_dimension_is_not_copied():
    champion = _trained("deep")
    model = build_model("deep", NEW, {**_hparams("deep"), "embedding_dim": 8}, seed=2)
    report = warm_start(model, champion, MAPS)
    assert "dimension 8 vs the champion's" in report.not_copied["inputs.embedding.embedding.weight"]
    assert report.copied_share["user"] == 0.0


def test_shape_conflicts_tell_hyper_parameters_from_vocabularies():
    champion = _trained("deep")
    assert shape_conflicts("deep", {**_hparams("deep"), "dropout": 0.3}, champion) == []  # no shape
    problems = shape_conflicts("deep", {**_hparams("deep"), "hidden": [64, 32]}, champion)
    assert "mlp.layers.0.weight: 64x66 vs the champion's 256x66" in problems
    assert "mlp.layers.8.weight: only in the champion" in problems  # one layer fewer


def test_anonymous_tables_are_never_copied():
    old, new = FusedEmbedding([5, 4], 3), FusedEmbedding([6, 4], 3)
    report = warm_start(new, old, {})
    assert report.not_copied == {"embedding.weight": "anonymous fields (FusedEmbedding built without names)"}
    with pytest.raises(ValueError, match="2 field names for 1"):
        FusedEmbedding([5], 3, names=["a", "b"])


def test_the_champion_is_left_unchanged():
    champion = _trained("wide_deep")
    before = {k: v.clone() for k, v in champion.state_dict().items()}
    model = build_model("wide_deep", NEW, _hparams("wide_deep"), seed=2)
    warm_start(model, champion, MAPS)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in champion.state_dict().items())
