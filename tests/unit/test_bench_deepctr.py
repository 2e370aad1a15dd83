"""The DeepCTR comparison's plumbing (no DeepCTR-Torch needed): the Adult split, which inputs
each DeepCTR part receives, and the column mapping of recloop's tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.deepctr_compare import split_adult
from benchmarks.deepctr_torch_side import FeatureColumns, model_inputs
from models.schema import Field, InputSchema


def test_split_adult_is_seeded_and_keeps_the_official_sizes():
    train, val, test = split_adult(0.1, seed=0, limit_rows=None)
    assert (len(train), len(val), len(test)) == (29_305, 3_256, 16_281)
    again = split_adult(0.1, seed=0, limit_rows=None)
    assert train.equals(again[0]) and val.equals(again[1])
    other_val = split_adult(0.1, seed=1, limit_rows=None)[1]
    assert not val.equals(other_val)


def test_each_deepctr_part_sees_what_recloop_feeds_it():
    cols = FeatureColumns(categorical=["c1", "c2"], crosses=["x"], continuous=["d"])
    assert cols.for_arch("wide_deep") == (["c1", "c2", "x"], ["c1", "c2", "d"])
    assert cols.for_arch("deepfm") == (["c1", "c2", "x", "d"], ["c1", "c2", "d"])
    assert cols.for_arch("dcn") == ([], ["c1", "c2", "x", "d"])  # recloop DCN embeds the crosses
    with pytest.raises(ValueError, match="valid"):
        cols.for_arch("dlrm")


def test_model_inputs_are_recloops_columns_by_name():
    schema = InputSchema(categorical=(Field("a", 5), Field("b", 3)), continuous=("z",),
                         crosses=(Field("a_x_b", 15),))
    batch = {"cat": torch.tensor([[1, 2], [4, 0]]), "cont": torch.tensor([[0.5], [-1.0]]),
             "cross": torch.tensor([[7], [12]])}
    inputs = model_inputs(batch, schema)
    assert list(inputs) == ["a", "b", "a_x_b", "z"]
    np.testing.assert_array_equal(inputs["b"], [2, 0])
    np.testing.assert_array_equal(inputs["a_x_b"], [7, 12])
    np.testing.assert_array_equal(inputs["z"], np.array([0.5, -1.0], dtype=np.float32))
