"""Architectures and the registry: shapes, gradients, edge schemas, overfitting, checkpoints."""

from __future__ import annotations

import ast
import dataclasses
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from models import ARCHITECTURES, build_model, load_checkpoint, model_config, save_checkpoint
from models.optim import build_optimizers
from models.schema import Field, InputSchema

ARCHS = sorted(ARCHITECTURES)
# The paper each architecture's module docstring must cite.
PAPERS = {
    "wide": "1606.07792", "deep": "1606.07792", "wide_deep": "1606.07792",
    "fm": "Rendle 2010", "deepfm": "1703.04247", "dcn": "1708.05123", "dcn_v2": "2008.13535",
    "dlrm": "1906.00091", "autoint": "1810.11921", "xdeepfm": "1803.05170",
    "final_mlp": "2304.00902", "gdcn": "2311.04635", "ncf": "1708.05031",
    "two_tower": "Yi et al. 2019", "dhen": "2203.11014", "split_network": "1708.05031",
}
# Architectures over the schema's user and item fields only: they cannot be built without them.
TOWERS = {"ncf", "two_tower", "split_network"}


def _has_key(arch: str, key: str) -> bool:
    return key in {f.name for f in dataclasses.fields(ARCHITECTURES[arch].config_class)}


def no_dropout(arch: str) -> dict:
    return {"dropout": 0.0} if _has_key(arch, "dropout") else {}


def small(arch: str) -> dict:
    return {"hidden": [32, 16]} if _has_key(arch, "hidden") else {}





def make_schema(n_cont: int = 3, crosses: bool = True) -> InputSchema:
    return InputSchema(
        categorical=(Field("user", 40), Field("item", 25), Field("hour", 24)),
        continuous=tuple(f"x{j}" for j in range(n_cont)),
        crosses=(Field("user_x_item", 997),) if crosses else (),
        user_fields=("user",),
        item_fields=("item",),
    )


def make_batch(schema: InputSchema, n: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def ids(fields):
        cols = [torch.randint(0, f.cardinality, (n,), generator=g) for f in fields]
        return torch.stack(cols, dim=1) if cols else torch.zeros(n, 0, dtype=torch.long)

    return {
        "cat": ids(schema.categorical),
        "cont": torch.randn(n, len(schema.continuous), generator=g),
        "cross": ids(schema.crosses),
        "label": torch.randint(0, 2, (n,), generator=g).float(),
    }


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_shape_and_attributes(arch):
    schema = make_schema()
    model = build_model(arch, schema)
    logits = model(make_batch(schema, n=17))
    assert logits.shape == (17,) and logits.dtype == torch.float32
    assert model.arch_name == arch and model.schema == schema
    assert model.config == model_config(arch, {})


@pytest.mark.parametrize("arch", ARCHS)
def test_gradients_are_finite_and_reach_every_parameter(arch):
    schema = make_schema()
    model = build_model(arch, schema, seed=0)
    batch = make_batch(schema)
    loss = nn.functional.binary_cross_entropy_with_logits(model(batch), batch["label"])
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        grad = p.grad.to_dense() if p.grad.is_sparse else p.grad  # embedding tables: the batch's rows
        assert torch.isfinite(grad).all(), name
        assert grad.abs().sum() > 0, name


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("n_cont, crosses", [(0, True), (3, False), (0, False)])
def test_works_without_continuous_or_crosses(arch, n_cont, crosses):
    schema = make_schema(n_cont=n_cont, crosses=crosses)
    model = build_model(arch, schema)
    batch = make_batch(schema, n=9)
    assert batch["cont"].shape == (9, n_cont)
    logits = model(batch)
    assert logits.shape == (9,)
    logits.sum().backward()


@pytest.mark.parametrize("arch", ARCHS)
def test_works_with_continuous_inputs_only(arch):
    schema = InputSchema(categorical=(), continuous=("a", "b"))
    if arch in TOWERS:
        with pytest.raises(ValueError, match="user_fields"):
            build_model(arch, schema)
        return
    model = build_model(arch, schema)
    assert model(make_batch(schema, n=5)).shape == (5,)


@pytest.mark.parametrize("arch", ARCHS)
def test_rejects_a_schema_without_inputs(arch):
    with pytest.raises(ValueError, match="at least one"):
        build_model(arch, InputSchema(categorical=(), continuous=()))


@pytest.mark.parametrize("arch", ARCHS)
def test_overfits_a_tiny_batch(arch):
    torch.manual_seed(0)
    schema = make_schema()
    model = build_model(arch, schema, no_dropout(arch), seed=0)
    batch = make_batch(schema, n=64, seed=1)  # random labels: only memorisation fits them
    opt = build_optimizers(model, lr=0.05, wide_lr=None, weight_decay=0.0)  # the trainer's: tables row-wise
    losses = []
    for _ in range(150):
        loss = nn.functional.binary_cross_entropy_with_logits(model(batch), batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_round_trip_gives_identical_predictions(arch, tmp_path):
    schema = make_schema()
    model = build_model(arch, schema, small(arch), seed=3)
    with torch.no_grad():  # move the zero-initialised wide weights off zero
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.eval()
    batch = make_batch(schema, n=33)
    path = save_checkpoint(tmp_path / "sub" / "model.pt", model)
    loaded = load_checkpoint(path)
    assert type(loaded) is type(model) and not loaded.training
    assert (loaded.arch_name, loaded.config, loaded.schema) == (arch, model.config, schema)
    assert torch.equal(loaded(batch), model(batch))


def test_load_checkpoint_rejects_other_files(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="not a recloop model checkpoint"):
        load_checkpoint(path)


def test_seed_makes_builds_identical_without_touching_the_global_rng():
    schema = make_schema()
    state = torch.get_rng_state()
    a, b = (build_model("wide_deep", schema, seed=7) for _ in range(2))
    assert torch.equal(state, torch.get_rng_state())
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_unknown_architecture_lists_the_valid_names():
    with pytest.raises(ValueError) as err:
        build_model("dcn_v9", make_schema())
    for name in ARCHS:
        assert name in str(err.value)


def test_unknown_hyper_parameter_lists_the_valid_keys():
    with pytest.raises(ValueError) as err:
        build_model("deep", make_schema(), {"hiden": [64]})
    msg = str(err.value)
    assert "hiden" in msg and "'deep'" in msg
    for key in ("embedding_dim", "hidden", "dropout", "activation", "batch_norm"):
        assert key in msg
    with pytest.raises(ValueError, match="use_crosses"):
        model_config("wide", {"embedding_dim": 8})


@pytest.mark.parametrize(
    "params, match",
    [
        ({"embedding_dim": "16"}, "'embedding_dim' expected int"),
        ({"embedding_dim": 16.0}, "'embedding_dim' expected int"),
        ({"hidden": 64}, "'hidden' expected tuple"),
        ({"hidden": [64, "32"]}, "'hidden' expected int"),
        ({"dropout": "0.1"}, "'dropout' expected float"),
        ({"batch_norm": 1}, "'batch_norm' expected bool"),
        ({"dropout": 1.5}, "dropout must be in"),
        ({"activation": "swish2"}, "unknown activation"),
        ({"embedding_dim": 0}, "embedding_dim"),
    ],
)
def test_wrong_types_and_values_fail_clearly(params, match):
    with pytest.raises(ValueError, match=match):
        model_config("wide_deep", params)
    with pytest.raises(TypeError):  # a ConfigError is both
        model_config("wide_deep", params)


def test_config_accepts_json_shaped_values_and_is_frozen():
    config = model_config("deep", {"hidden": [64, 32], "dropout": 0, "embedding_dim": 8})
    assert config.hidden == (64, 32) and config.dropout == 0.0 and isinstance(config.dropout, float)
    with pytest.raises(AttributeError):
        config.dropout = 0.5


def test_build_model_rejects_a_layout_dict():
    with pytest.raises(TypeError, match="InputSchema"):
        build_model("wide", make_schema().to_layout())


def test_every_architecture_has_a_config_and_docstrings():
    assert set(PAPERS) >= set(ARCHITECTURES)
    for arch, cls in ARCHITECTURES.items():
        assert cls.__doc__ and "Forward" in cls.__doc__
        assert PAPERS[arch] in sys.modules[cls.__module__].__doc__, arch
        assert dataclasses.is_dataclass(cls.config_class)
        assert cls.config_class.__dataclass_params__.frozen


def test_models_package_imports_only_torch_numpy_and_the_standard_library():
    allowed = {"torch", "numpy", "models"} | set(sys.stdlib_module_names)
    models_dir = Path(sys.modules["models"].__file__).parent
    for path in sorted(models_dir.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"models/{path.name} imports {name}"


# Architecture-specific options and contracts (the tests above run every architecture at defaults).

VARIANTS = [
    ("fm", {"use_crosses": False}),
    ("dcn_v2", {"low_rank": 4}),
    ("dcn_v2", {"low_rank": 4, "n_experts": 3, "structure": "parallel"}),
    ("gdcn", {"structure": "parallel"}),
    ("dlrm", {"bottom_hidden": []}),
    ("dhen", {"modules": ["dot", "cross"], "n_layers": 1}),
    ("final_mlp", {"hidden1": [8], "hidden2": [12, 4], "n_heads": 4}),
]


@pytest.mark.parametrize("arch, params", VARIANTS)
def test_variants_build_and_get_gradients_everywhere(arch, params):
    schema = make_schema()
    model = build_model(arch, schema, params, seed=0)
    batch = make_batch(schema, n=16)
    nn.functional.binary_cross_entropy_with_logits(model(batch), batch["label"]).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "arch, params, match",
    [
        ("dcn_v2", {"n_experts": 2}, "needs low_rank"),
        ("dcn_v2", {"structure": "serial"}, "structure"),
        ("gdcn", {"structure": "serial"}, "structure"),
        ("final_mlp", {"hidden1": [30], "n_heads": 4}, "n_heads"),
        ("dhen", {"modules": ["dot", "mlp"]}, "modules"),
        ("dhen", {"n_heads": 3}, "n_heads"),
        ("two_tower", {"temperature": 0.0}, "temperature"),
    ],
)
def test_architecture_specific_config_errors(arch, params, match):
    with pytest.raises(ValueError, match=match):
        model_config(arch, params)


def test_fm_logit_is_linear_term_plus_brute_force_pairs_of_fields():
    schema = make_schema(n_cont=2)
    model = build_model("fm", schema, seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    batch = make_batch(schema, n=4)
    out = model(batch)
    ids = torch.cat([batch["cat"], batch["cross"]], dim=1)
    for b in range(4):
        vectors = [model.base.embedding.ids.embedding.weight[model.base.embedding.ids.offsets[f] + batch["cat"][b, f]]
                   for f in range(3)]
        vectors += [batch["cont"][b, c] * model.base.embedding.cont[c] for c in range(2)]
        pairs = sum(torch.dot(vectors[i], vectors[j]) for i in range(5) for j in range(i + 1, 5))
        linear = model.base.linear(ids[b:b + 1], batch["cont"][b:b + 1])[0, 0]
        assert torch.allclose(out[b], linear + pairs, atol=1e-4)


@pytest.mark.parametrize("arch", sorted(TOWERS))
def test_tower_models_need_known_user_and_item_fields(arch):
    base = make_schema()
    with pytest.raises(ValueError, match="at least one user field and one item field"):
        build_model(arch, dataclasses.replace(base, item_fields=()))
    with pytest.raises(ValueError, match="unknown categorical field.*'shop'"):
        build_model(arch, dataclasses.replace(base, item_fields=("shop",)))
    several = dataclasses.replace(base, user_fields=("user", "hour"))
    assert build_model(arch, several)(make_batch(several, n=3)).shape == (3,)


def test_two_tower_item_embedding_reads_only_item_columns():
    schema = make_schema()
    model = build_model("two_tower", schema, seed=0).eval()
    batch = make_batch(schema, n=8)
    items_only = {"cat": batch["cat"].clone()}
    items_only["cat"][:, [0, 2]] = 0  # user and hour columns: any valid id
    v = model.item_embedding(items_only)
    assert v.shape == (8, model.config.output_dim)
    assert torch.allclose(v, model.item_embedding(batch))
    assert torch.allclose(v.norm(dim=1), torch.ones(8))
    u = model.user_embedding(batch)
    expected = (u * v).sum(1) / model.config.temperature + model.bias
    assert torch.allclose(model(batch), expected, atol=1e-5)
