"""Native (C) kernels for the few places where torch's eager ops leave most of a CPU
training step on the table, each with a torch implementation (its reference and fallback: the
same bits for the dropout and the row sums, equal to float rounding for the others).

- `relu_dropout.dropout`: inverted dropout, fused with a preceding ReLU (`relu_dropout.c`).
- `cross.cross_v1`: DCN-V1's cross network, every layer of a row in one pass (`cross_v1.c`).
- `factorization.fm`: a factorization machine's pairwise term, one pass each way (`fm.c`).
- `rows.rows_gather`, `rows.rows_add`: an embedding lookup's rows gathered into one matrix,
  and its backward's row sums (`rows.c`).
- `mlp.mlp`: a Linear -> ReLU -> dropout stack's training step as one autograd node, its first
  layer folded through a small embedding table (`fold.c`) when its input is a `Lookup`.
- `onednn.linear`: float32 `F.linear` through oneDNN instead of MKL's sgemm, on CPUs where that is faster.
- `native`: compiles and caches the C sources on first use; `use_native(False)` turns every
  native path off for the process.
"""

from models.kernels.cross import cross_v1
from models.kernels.factorization import fm
from models.kernels.fold import Lookup
from models.kernels.mlp import mlp
from models.kernels.native import use_native
from models.kernels.onednn import linear
from models.kernels.relu_dropout import dropout, kernel_in_use
from models.kernels.rows import rows_add, rows_gather

__all__ = ["Lookup", "cross_v1", "dropout", "fm", "kernel_in_use", "linear", "mlp", "rows_add", "rows_gather", "use_native"]
