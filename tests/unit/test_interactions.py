"""Interaction blocks against slow, obvious references (explicit loops over fields, pairs, heads)."""

from __future__ import annotations

import pytest
import torch

from models.dhen import MODULES, DHENLayer
from models.interactions import (
    CIN,
    BilinearFusion,
    CrossNetV1,
    CrossNetV2,
    DotInteraction,
    FactorizationMachine,
    FeatureGating,
    GatedCrossNet,
    InteractingLayer,
)
from models.layers import FieldEmbedding

B, F, D, N = 5, 4, 3, 7


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _close(a, b):
    return torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_fm_pairwise_term_sums_dot_products_over_pairs_of_fields():
    emb = _randn(B, F, D)
    out = FactorizationMachine()(emb)
    assert out.shape == (B, 1)
    for b in range(B):
        expected = sum(
            torch.dot(emb[b, i], emb[b, j]) for i in range(F) for j in range(i + 1, F)
        )
        assert _close(out[b, 0], expected)
    # Over fields, not flattened scalars: one field alone has no pairs (torchrec's would not be 0).
    assert torch.equal(FactorizationMachine()(_randn(B, 1, D)), torch.zeros(B, 1))


def test_field_embedding_scales_one_vector_per_continuous_column():
    layer = FieldEmbedding([3, 5], n_continuous=2, dim=D, init_std=1.0)
    ids, cont = torch.tensor([[2, 4], [0, 1]]), _randn(2, 2)
    out = layer(ids, cont)
    assert out.shape == (2, 4, D)
    w = layer.ids.embedding.weight
    for b in range(2):
        assert torch.equal(out[b, 0], w[ids[b, 0]]) and torch.equal(out[b, 1], w[3 + ids[b, 1]])
        for c in range(2):
            assert _close(out[b, 2 + c], cont[b, c] * layer.cont[c])


def test_cross_v1_matches_the_layer_formula():
    torch.manual_seed(0)
    net = CrossNetV1(N, n_layers=3)
    with torch.no_grad():
        net.biases.normal_()
    x0 = _randn(B, N)
    out = net(x0)
    for b in range(B):
        x = x0[b].clone()
        for w, bias in zip(net.weights, net.biases):
            scalar = sum(x[n] * w[n] for n in range(N))
            x = torch.stack([x0[b, n] * scalar + bias[n] + x[n] for n in range(N)])
        assert _close(out[b], x)


def _matvec(W, x):
    return torch.stack([sum(W[i, j] * x[j] for j in range(W.shape[1])) for i in range(W.shape[0])])


def test_cross_v2_full_rank_matches_the_layer_formula():
    torch.manual_seed(0)
    net = CrossNetV2(N, n_layers=2)
    x0 = _randn(B, N)
    out = net(x0)
    for b in range(B):
        x = x0[b]
        for lin in net.W:
            x = x0[b] * (_matvec(lin.weight, x) + lin.bias) + x
        assert _close(out[b], x)


def test_cross_v2_low_rank_is_full_rank_with_w_equal_u_v_transpose():
    torch.manual_seed(0)
    low = CrossNetV2(N, n_layers=2, rank=2)
    full = CrossNetV2(N, n_layers=2)
    with torch.no_grad():
        low.b.normal_()
        for layer, lin in enumerate(full.W):
            lin.weight.copy_(low.U[layer, 0] @ low.V[layer, 0].T)  # (N, r) (r, N)
            lin.bias.copy_(low.b[layer])
    x0 = _randn(B, N)
    assert _close(low(x0), full(x0))


def test_cross_v2_mixture_of_experts_matches_a_loop_over_experts():
    torch.manual_seed(0)
    K, r = 3, 2
    net = CrossNetV2(N, n_layers=2, rank=r, n_experts=K)
    with torch.no_grad():
        net.b.normal_()
    x0 = _randn(B, N)
    out = net(x0)
    for b in range(B):
        x = x0[b]
        for layer in range(2):
            logits = _matvec(net.gates[layer].weight, x)
            gates = torch.exp(logits) / torch.exp(logits).sum()
            mixed = torch.zeros(N)
            for k in range(K):
                v = torch.relu(_matvec(net.V[layer, k].T, x))
                v = torch.relu(_matvec(net.C[layer, k], v))
                expert = x0[b] * (_matvec(net.U[layer, k], v) + net.b[layer])
                mixed = mixed + gates[k] * expert
            x = mixed + x
        assert _close(out[b], x)
    with pytest.raises(ValueError, match="low rank"):
        CrossNetV2(N, 1, rank=None, n_experts=2)


def test_gdcn_gated_cross_matches_the_layer_formula():
    torch.manual_seed(0)
    net = GatedCrossNet(N, n_layers=2)
    c0 = _randn(B, N)
    out = net(c0)
    for b in range(B):
        c = c0[b]
        for w, g in zip(net.W, net.W_gate):
            gate = 1 / (1 + torch.exp(-(_matvec(g.weight, c) + g.bias)))
            c = torch.stack([c0[b, n] * (_matvec(w.weight, c)[n] + w.bias[n]) * gate[n] + c[n]
                             for n in range(N)])
        assert _close(out[b], c)


def test_dlrm_dot_interaction_is_the_upper_triangle_without_self_pairs():
    emb = _randn(B, F, D)
    out = DotInteraction()(emb)
    assert out.shape == (B, F * (F - 1) // 2)
    for b in range(B):
        expected = [torch.dot(emb[b, i], emb[b, j]) for i in range(F) for j in range(i + 1, F)]
        assert _close(out[b], torch.stack(expected))


def test_autoint_attention_matches_a_loop_over_heads_and_fields():
    torch.manual_seed(0)
    H, d = 2, 3
    layer = InteractingLayer(D, n_heads=H, head_dim=d)
    emb = _randn(B, F, D)
    out = layer(emb)
    assert out.shape == (B, F, H * d)
    for b in range(B):
        for m in range(F):
            heads = []
            for h in range(H):
                rows = slice(h * d, (h + 1) * d)
                q = _matvec(layer.query.weight[rows], emb[b, m])
                keys = [_matvec(layer.key.weight[rows], emb[b, k]) for k in range(F)]
                values = [_matvec(layer.value.weight[rows], emb[b, k]) for k in range(F)]
                scores = torch.stack([torch.dot(q, key) for key in keys])
                attn = torch.exp(scores) / torch.exp(scores).sum()
                heads.append(sum(attn[k] * values[k] for k in range(F)))
            expected = torch.relu(torch.cat(heads) + _matvec(layer.residual.weight, emb[b, m]))
            assert _close(out[b, m], expected)


def test_cin_matches_the_feature_map_formula():
    torch.manual_seed(0)
    sizes = (3, 2)
    cin = CIN(F, sizes)
    emb = _randn(B, F, D)
    out = cin(emb)
    assert out.shape == (B, sum(sizes))
    for b in range(B):
        x0, prev, pooled = emb[b], emb[b], []
        for layer, h_k in zip(cin.layers, sizes):
            W = layer.weight.view(h_k, prev.shape[0], F)  # W^{k,h}_{i,j}
            x = torch.zeros(h_k, D)
            for h in range(h_k):
                for i in range(prev.shape[0]):
                    for j in range(F):
                        x[h] += W[h, i, j] * prev[i] * x0[j]
            pooled.append(x.sum(dim=1))
            prev = x
        assert _close(out[b], torch.cat(pooled))


def test_final_mlp_gating_and_bilinear_fusion_match_their_formulas():
    torch.manual_seed(0)
    gating = FeatureGating(N, ctx_dim=4, hidden=5)
    x = _randn(B, N)
    g = 2 * torch.sigmoid(gating.gate(gating.context))
    assert _close(gating(x), g * x) and 0 < g.min() and g.max() < 2

    H, d1, d2 = 2, 6, 4
    fusion = BilinearFusion(d1, d2, n_heads=H)
    o1, o2 = _randn(B, d1, seed=1), _randn(B, d2, seed=2)
    out = fusion(o1, o2)
    for b in range(B):
        expected = fusion.linear1.bias[0] + torch.dot(fusion.linear1.weight[0], o1[b])
        expected = expected + torch.dot(fusion.linear2.weight[0], o2[b])
        for h in range(H):
            a, c = o1[b, h * 3:(h + 1) * 3], o2[b, h * 2:(h + 1) * 2]
            expected = expected + sum(a[i] * fusion.W3[h, i, j] * c[j] for i in range(3) for j in range(2))
        assert _close(out[b, 0], expected)
    with pytest.raises(ValueError, match="divisible"):
        BilinearFusion(5, 4, n_heads=2)


def test_dhen_layer_merges_each_fields_module_outputs_with_a_shortcut_and_norm():
    torch.manual_seed(0)
    layer = DHENLayer(F, 4, MODULES, n_heads=2)
    x = _randn(B, F, 4)
    out = layer(x)
    assert out.shape == (B, F, 4)
    ens = layer.ensemble
    per_module = [
        ens["dot"][1](DotInteraction()(x)).view(B, F, 4),
        ens["self_attention"](x),
        ens["linear"](x.flatten(1)).view(B, F, 4),
        ens["cross"](x.flatten(1)).view(B, F, 4),
    ]
    for b in range(B):
        for f in range(F):
            merged = torch.cat([m[b, f] for m in per_module])  # the modules' vectors for field f
            h = _matvec(layer.merge.weight, merged) + layer.merge.bias + x[b, f]
            expected = (h - h.mean()) / torch.sqrt(h.var(unbiased=False) + layer.norm.eps)
            expected = expected * layer.norm.weight + layer.norm.bias
            assert _close(out[b, f], expected)
