"""Shared layers against slow, obvious references."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.layers import MLP, FusedEmbedding, WideLinear

CARDS = [3, 7, 1, 12]





def _ids(cards, n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, c, (n,), generator=g) for c in cards], dim=1)


def test_fused_embedding_equals_separate_per_field_lookups():
    torch.manual_seed(0)
    separate = [nn.Embedding(c, 5) for c in CARDS]
    fused = FusedEmbedding(CARDS, 5)
    with torch.no_grad():
        fused.embedding.weight.copy_(torch.cat([e.weight for e in separate]))
    ids = _ids(CARDS)
    out = fused(ids)
    assert out.shape == (32, len(CARDS), 5)
    for b in range(ids.shape[0]):
        for f, emb in enumerate(separate):
            assert torch.equal(out[b, f], emb.weight[ids[b, f]])


def test_fused_embedding_is_one_table_with_offsets():
    fused = FusedEmbedding(CARDS, 4)
    assert fused.embedding.weight.shape == (sum(CARDS), 4)
    assert fused.offsets.tolist() == [0, 3, 10, 11]
    assert "offsets" not in fused.state_dict()  # derived from the cardinalities
    # Field f's id 0 is row offset_f; its last id is the row just before field f+1's id 0.
    first = torch.zeros(1, len(CARDS), dtype=torch.long)
    last = torch.tensor([[c - 1 for c in CARDS]])
    weight = fused.embedding.weight
    assert torch.equal(fused(first)[0], weight[[0, 3, 10, 11]])
    assert torch.equal(fused(last)[0], weight[[2, 9, 10, 22]])
    assert 0.005 < fused.embedding.weight.std().item() < 0.1


def test_fused_embedding_zero_fields_and_bad_input():
    fused = FusedEmbedding([], 4)
    assert fused(torch.zeros(6, 0, dtype=torch.long)).shape == (6, 0, 4)
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        FusedEmbedding(CARDS, 4)(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="cardinality"):
        FusedEmbedding([3, 0], 4)


def test_mlp_shapes_and_options():
    x = torch.randn(10, 7)
    mlp = MLP(7, (16, 8), dropout=0.5, activation="gelu", batch_norm=True)
    assert mlp(x).shape == (10, 8) and mlp.out_dim == 8
    assert any(isinstance(m, nn.BatchNorm1d) for m in mlp.modules())
    mlp.eval()
    assert torch.equal(mlp(x), mlp(x))  # dropout off in eval
    plain = MLP(7, (4,))
    lin = plain.layers[0]
    assert torch.allclose(plain(x), torch.relu(x @ lin.weight.T + lin.bias))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"hidden": ()}, "hidden"),
        ({"hidden": (8,), "activation": "swish2"}, "valid"),
        ({"hidden": (8,), "dropout": 1.0}, "dropout"),
    ],
)
def test_mlp_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MLP(4, **kwargs)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("native", [True, False])
def test_flat_lookups_and_field_sums_have_the_gradients_of_the_plain_ops(sparse, native):
    """`flat` (embeddings side by side, then a tail) and `field_sum` against nn.functional.embedding,
    cat and sum: the same outputs, table gradients (dense, or sparse rows) and tail gradient."""
    from models import kernels

    torch.manual_seed(3)
    fused = FusedEmbedding(CARDS, 4, init_std=1.0)
    fused.embedding.sparse = sparse
    ids, tail = _ids(CARDS, n=64), torch.randn(64, 3, requires_grad=True)
    vectors = torch.randn(3, 4, requires_grad=True)  # continuous fields' vectors (FieldEmbedding)
    weight = fused.embedding.weight
    plain = nn.functional.embedding(ids + fused.offsets, weight)  # (B, F, D)
    want_flat = torch.cat([plain.flatten(1), tail], dim=1)
    want_scaled = torch.cat([plain.flatten(1), (tail.unsqueeze(2) * vectors).flatten(1)], dim=1)
    want_sum = plain.sum(dim=1)
    g_flat, g_scaled, g_sum = torch.randn_like(want_flat), torch.randn_like(want_scaled), torch.randn_like(want_sum)
    want = torch.autograd.grad([want_flat, want_sum], [weight, tail], [g_flat, g_sum], retain_graph=True)
    want_scaled_grads = torch.autograd.grad(want_scaled, [weight, tail, vectors], g_scaled)
    with kernels.use_native(native):
        flat, total, scaled = fused.flat(ids, tail), fused.field_sum(ids), fused.flat(ids, tail, vectors)
        assert torch.equal(flat, want_flat) and torch.equal(total, want_sum) and torch.equal(scaled, want_scaled)
        assert torch.equal(fused(ids), plain)
        got_flat = torch.autograd.grad(flat, [weight, tail], g_flat)
        got_sum = torch.autograd.grad(total, [weight], g_sum)[0]
        got_scaled = torch.autograd.grad(scaled, [weight, tail, vectors], g_scaled)
    assert got_flat[0].is_sparse == sparse and got_sum.is_sparse == sparse
    torch.testing.assert_close(got_flat[0].to_dense() + got_sum.to_dense(), want[0])
    assert torch.equal(got_flat[1], want[1])
    torch.testing.assert_close(got_scaled[0].to_dense(), want_scaled_grads[0].to_dense())
    assert torch.equal(got_scaled[2], want_scaled_grads[2])  # the continuous fields' vectors: autograd's sums
    torch.testing.assert_close(got_scaled[1], want_scaled_grads[1])
    empty = FusedEmbedding([], 4)
    none = torch.zeros(5, 0, dtype=torch.long)
    few = tail[:5]
    assert empty.flat(none).shape == (5, 0) and empty.flat(none, few) is few
    assert torch.equal(empty.flat(none, few, vectors), (few.unsqueeze(2) * vectors).flatten(1))
    assert torch.equal(empty.field_sum(none), torch.zeros(5, 4))


def test_wide_linear_equals_brute_force_sum_of_weights():
    torch.manual_seed(1)
    layer = WideLinear(CARDS, n_continuous=3)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    ids, cont = _ids(CARDS, n=16), torch.randn(16, 3)
    out = layer(ids, cont)
    assert out.shape == (16, 1)
    w = layer.weights.embedding.weight[:, 0]
    v = layer.dense.weight[0]
    for b in range(16):
        expected = layer.bias[0].clone()
        offset = 0
        for f, c in enumerate(CARDS):
            expected += w[offset + ids[b, f]]
            offset += c
        for j in range(3):
            expected += v[j] * cont[b, j]
        assert torch.allclose(out[b, 0], expected, atol=1e-5)


def test_wide_linear_starts_at_zero_and_handles_no_fields():
    layer = WideLinear(CARDS)
    assert torch.equal(layer(_ids(CARDS)), torch.zeros(32, 1))
    empty = WideLinear([])
    with torch.no_grad():
        empty.bias.fill_(0.7)
    assert torch.allclose(empty(torch.zeros(5, 0, dtype=torch.long)), torch.full((5, 1), 0.7))
    with pytest.raises(ValueError, match="cont"):
        WideLinear(CARDS, n_continuous=2)(_ids(CARDS))
