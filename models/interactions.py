"""Feature-interaction blocks shared by the architectures (torchrec style: apart from models).

Each block is checked against a slow, obvious loop in tests/unit/test_interactions.py.
Shapes: B = batch size, F = number of fields, D = embedding dimension, N = width of a
flat input (e.g. F * D + C), H = feature maps / heads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from models import kernels
from models.layers import Linear


class FactorizationMachine(nn.Module):
    """Pairwise term of a factorization machine (Rendle 2010, "Factorization Machines", eq. 1
    and lemma 3.1), over FIELDS, not over flattened scalars (unlike torchrec's
    `FactorizationMachine`):

        y = sum_{i < j} <v_i, v_j> = 0.5 * sum_d [ (sum_f v_fd)^2 - sum_f v_fd^2 ]

    computed in O(F D). The linear term lives in `layers.WideLinear`.

    Forward:
        emb: (B, F, D) -> (B, 1)   (0 when F < 2)
    """

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return kernels.fm(emb)  # (B, 1); in C, or `kernels.factorization.reference`


class CrossNetV1(nn.Module):
    """Cross network of DCN (Wang et al. 2017, "Deep & Cross Network for Ad Click
    Predictions", arXiv 1708.05123, eq. 3):

        x_{l+1} = x_0 * (x_l^T w_l) + b_l + x_l,   w_l, b_l in R^N

    Args:
        in_dim: width N of x_0.
        n_layers: number of cross layers L (>= 1).

    Forward:
        x0: (B, N) -> (B, N)
    """

    def __init__(self, in_dim: int, n_layers: int):
        super().__init__()
        self.weights = nn.Parameter(torch.randn(n_layers, in_dim) / math.sqrt(in_dim))  # (L, N)
        self.biases = nn.Parameter(torch.zeros(n_layers, in_dim))  # (L, N)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        return kernels.cross_v1(x0, self.weights, self.biases)  # (B, N); in C, or `kernels.cross.reference`


class CrossNetV2(nn.Module):
    """Cross network of DCN-V2 (Wang et al. 2020, "DCN V2: Improved Deep & Cross Network",
    arXiv 2008.13535), in its three forms:

        full rank (rank=None):        x_{l+1} = x_0 * (W_l x_l + b_l) + x_l
        low rank (rank=r):            x_{l+1} = x_0 * (U_l V_l^T x_l + b_l) + x_l
        mixture (rank=r, experts=K):  x_{l+1} = sum_k G_k(x_l) E_k(x_l) + x_l
            E_k(x) = x_0 * (U_k g(C_k g(V_k^T x)) + b_l),  G = softmax(gate_l x),  g = ReLU

    Args:
        in_dim: width N of x_0.
        n_layers: number of cross layers L (>= 1).
        rank: r for the low-rank forms, None for full rank.
        n_experts: K low-rank experts (> 1 needs a rank).

    Forward:
        x0: (B, N) -> (B, N)
    """

    def __init__(self, in_dim: int, n_layers: int, rank: int | None = None, n_experts: int = 1):
        super().__init__()
        if n_experts > 1 and rank is None:
            raise ValueError("a mixture of experts (n_experts > 1) needs a low rank")
        self.rank, self.n_experts = rank, n_experts
        n, k = in_dim, n_experts
        if rank is None:
            self.W = nn.ModuleList(Linear(n, n) for _ in range(n_layers))
        else:
            r = rank
            self.U = nn.Parameter(torch.randn(n_layers, k, n, r) / math.sqrt(r))
            self.V = nn.Parameter(torch.randn(n_layers, k, n, r) / math.sqrt(n))
            self.b = nn.Parameter(torch.zeros(n_layers, n))
            if k > 1:
                self.C = nn.Parameter(torch.randn(n_layers, k, r, r) / math.sqrt(r))
                self.gates = nn.ModuleList(Linear(n, k, bias=False) for _ in range(n_layers))
        self.n_layers = n_layers

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in range(self.n_layers):
            if self.rank is None:
                x = x0 * self.W[layer](x) + x  # (B, N)
            elif self.n_experts == 1:
                low = x @ self.V[layer, 0]  # (B, r)
                x = x0 * (low @ self.U[layer, 0].T + self.b[layer]) + x  # (B, N)
            else:
                v = torch.relu(torch.einsum("bn,knr->bkr", x, self.V[layer]))  # (B, K, r)
                v = torch.relu(torch.einsum("kij,bkj->bki", self.C[layer], v))  # C_k v: (B, K, r)
                u = torch.einsum("bks,kns->bkn", v, self.U[layer])  # (B, K, N)
                experts = x0.unsqueeze(1) * (u + self.b[layer])  # (B, K, N)
                gate = torch.softmax(self.gates[layer](x), dim=1)  # (B, K)
                x = torch.einsum("bk,bkn->bn", gate, experts) + x  # (B, N)
        return x


class GatedCrossNet(nn.Module):
    """Gated cross network of GDCN (Wang et al. 2023, "Towards Deeper, Lighter and
    Interpretable Cross Network for CTR Prediction", arXiv 2311.04635):

        c_{l+1} = c_0 * (W_l c_l + b_l) * sigmoid(W_g,l c_l + b_g,l) + c_l

    The information gate lets each layer keep only the crosses that matter.

    Args:
        in_dim: width N of c_0.
        n_layers: number of gated cross layers L (>= 1).

    Forward:
        c0: (B, N) -> (B, N)
    """

    def __init__(self, in_dim: int, n_layers: int):
        super().__init__()
        self.W = nn.ModuleList(Linear(in_dim, in_dim) for _ in range(n_layers))
        self.W_gate = nn.ModuleList(Linear(in_dim, in_dim) for _ in range(n_layers))

    def forward(self, c0: torch.Tensor) -> torch.Tensor:
        c = c0
        for w, w_gate in zip(self.W, self.W_gate):
            c = c0 * w(c) * torch.sigmoid(w_gate(c)) + c  # (B, N)
        return c


class DotInteraction(nn.Module):
    """DLRM's feature interaction (Naumov et al. 2019, "Deep Learning Recommendation Model
    for Personalization and Recommendation Systems", arXiv 1906.00091): the dot
    product of every pair of field vectors, upper triangle without the diagonal.

        out[b, p(i, j)] = <e_bi, e_bj>   for i < j, pairs in row-major order

    Forward:
        emb: (B, F, D) -> (B, F (F - 1) / 2)
    """

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        n = emb.shape[1]
        gram = torch.bmm(emb, emb.transpose(1, 2))  # (B, F, F)
        i, j = torch.triu_indices(n, n, offset=1, device=emb.device)
        return gram[:, i, j]  # (B, F (F - 1) / 2)


class InteractingLayer(nn.Module):
    """AutoInt's interacting layer (Song et al. 2019, "AutoInt: Automatic Feature Interaction
    Learning via Self-Attentive Neural Networks", arXiv 1810.11921): multi-head
    self-attention across fields, with a residual connection.

        a^h_{m,k} = softmax_k < W_Q^h e_m, W_K^h e_k >
        e~^h_m = sum_k a^h_{m,k} W_V^h e_k
        e^Res_m = ReLU( [e~^1_m; ...; e~^H_m] + W_Res e_m )

    (no 1/sqrt(d) scaling, as in the paper).

    Args:
        in_dim: field vector width D.
        n_heads: H.
        head_dim: d' per head; the output width is H * d'.

    Forward:
        emb: (B, F, D) -> (B, F, H * d')
    """

    def __init__(self, in_dim: int, n_heads: int, head_dim: int):
        super().__init__()
        out = n_heads * head_dim
        self.n_heads, self.head_dim, self.out_dim = n_heads, head_dim, out
        self.query = nn.Linear(in_dim, out, bias=False)
        self.key = nn.Linear(in_dim, out, bias=False)
        self.value = nn.Linear(in_dim, out, bias=False)
        self.residual = nn.Linear(in_dim, out, bias=False)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        b, f, _ = emb.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, f, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, F, d')

        q, k, v = heads(self.query(emb)), heads(self.key(emb)), heads(self.value(emb))
        attn = torch.softmax(q @ k.transpose(2, 3), dim=-1)  # (B, H, F, F)
        out = (attn @ v).transpose(1, 2).reshape(b, f, self.out_dim)  # (B, F, H * d')
        return torch.relu(out + self.residual(emb))


class CIN(nn.Module):
    """Compressed Interaction Network of xDeepFM (Lian et al. 2018, "xDeepFM: Combining
    Explicit and Implicit Feature Interactions", arXiv 1803.05170):

        X^k_{h,*} = sum_{i < H_{k-1}} sum_{j < F} W^{k,h}_{i,j} (X^{k-1}_{i,*} o X^0_{j,*})
        p^k_h = sum_d X^k_{h,d},   out = [p^1, ..., p^T]

    with X^0 the field embeddings (F maps) and o the Hadamard product.

    Args:
        n_fields: F.
        layer_sizes: H_1, ..., H_T (feature maps per layer).

    Forward:
        emb: (B, F, D) -> (B, sum_k H_k)
    """

    def __init__(self, n_fields: int, layer_sizes: Sequence[int]):
        super().__init__()
        prev, layers = n_fields, []
        for h in layer_sizes:
            layers.append(nn.Linear(prev * n_fields, h, bias=False))  # W^k: (H_k, H_{k-1} F)
            prev = h
        self.layers = nn.ModuleList(layers)
        self.out_dim = sum(layer_sizes)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        # Laid out (B D, maps): the outer products of one sample's embedding dimension d are
        # row b D + d of a (B D, H_{k-1} F) matrix, so each layer is one outer product and one
        # matmul, with no transposed copy of that matrix (the largest tensor in the model).
        b, f, d = emb.shape
        e = emb.transpose(1, 2).reshape(b * d, f)  # (B D, F)
        x, pooled = e, []
        for layer in self.layers:
            z = _Outer.apply(x, e)  # (B D, H_{k-1}, F): z[n, i, j] = x[n, i] e[n, j]
            x = layer(z.view(b * d, -1))  # (B D, H_{k-1} F) -> (B D, H_k)
            pooled.append(x.view(b, d, -1).sum(dim=1))  # (B, H_k)
        return torch.cat(pooled, dim=1)  # (B, sum H_k)


class _Outer(torch.autograd.Function):
    """Row-wise outer products, z[n] = x[n] e[n]^T: (N, H), (N, F) -> (N, H, F).

    Autograd's backward of the broadcast multiply writes two (N, H, F) products and then
    sums them down; here each input's gradient is one batched matrix-vector product that
    reads the incoming gradient once (4x faster for xDeepFM's CIN on 2 cores)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, e)
        return x.unsqueeze(2) * e.unsqueeze(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, e = (t.to(grad.dtype) for t in ctx.saved_tensors)  # under autocast x may be bfloat16, e float32
        grad_x = torch.bmm(grad, e.unsqueeze(2)).squeeze(2) if ctx.needs_input_grad[0] else None  # (N, H)
        grad_e = torch.bmm(x.unsqueeze(1), grad).squeeze(1) if ctx.needs_input_grad[1] else None  # (N, F)
        return grad_x, grad_e


class FeatureGating(nn.Module):
    """FinalMLP's stream-specific feature selection (Mao et al. 2023, "FinalMLP: An Enhanced
    Two-Stream MLP Model for CTR Prediction", arXiv 2304.00902):

        g = 2 * sigmoid( MLP(ctx) ),   out = g * x

    The context is a learned vector (the paper's choice when no context fields are given),
    so each stream learns which inputs to weight up (g up to 2) or down.

    Args:
        in_dim: width of x.
        ctx_dim: width of the learned context vector.
        hidden: width of the gate MLP's hidden layer.

    Forward:
        x: (B, in_dim) -> (B, in_dim)
    """

    def __init__(self, in_dim: int, ctx_dim: int, hidden: int):
        super().__init__()
        self.context = nn.Parameter(torch.randn(ctx_dim))
        self.gate = nn.Sequential(Linear(ctx_dim, hidden), nn.ReLU(), Linear(hidden, in_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * torch.sigmoid(self.gate(self.context)) * x  # (in_dim,) * (B, in_dim)


class BilinearFusion(nn.Module):
    """FinalMLP's multi-head bilinear fusion (Mao et al. 2023, arXiv 2304.00902):
    split both stream outputs into H chunks and sum a bilinear score per head,

        y = b + w_1^T o_1 + w_2^T o_2 + sum_h o_1h^T W_3h o_2h

    Args:
        dim1, dim2: widths of the two stream outputs (each divisible by n_heads).
        n_heads: H.

    Forward:
        o1: (B, dim1), o2: (B, dim2) -> (B, 1)
    """

    def __init__(self, dim1: int, dim2: int, n_heads: int):
        super().__init__()
        if dim1 % n_heads or dim2 % n_heads:
            raise ValueError(f"stream widths {dim1} and {dim2} must be divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.linear1 = nn.Linear(dim1, 1)
        self.linear2 = nn.Linear(dim2, 1, bias=False)
        d1, d2 = dim1 // n_heads, dim2 // n_heads
        self.W3 = nn.Parameter(torch.randn(n_heads, d1, d2) / math.sqrt(d1 * d2))  # (H, d1, d2)

    def forward(self, o1: torch.Tensor, o2: torch.Tensor) -> torch.Tensor:
        b = o1.shape[0]
        h1 = o1.view(b, self.n_heads, -1)  # (B, H, d1)
        h2 = o2.view(b, self.n_heads, -1)  # (B, H, d2)
        bilinear = torch.einsum("bhi,hij,bhj->b", h1, self.W3, h2).unsqueeze(1)  # (B, 1)
        return self.linear1(o1) + self.linear2(o2) + bilinear
