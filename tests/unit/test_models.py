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
from models.schema import Field, InputSchema

ARCHS = sorted(ARCHITECTURES)
NO_DROPOUT = {"wide": {}, "deep": {"dropout": 0.0}, "wide_deep": {"dropout": 0.0}}





def make_schema(n_cont: int = 3, crosses: bool = True) -> InputSchema:
    return InputSchema(
        categorical=(Field("user", 40), Field("item", 25), Field("hour", 24)),
        continuous=tuple(f"x{j}" for j in range(n_cont)),
        crosses=(Field("user_x_item", 997),) if crosses else (),
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
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


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
    model = build_model(arch, schema, NO_DROPOUT[arch], seed=0)
    batch = make_batch(schema, n=64, seed=1)  # random labels: only memorisation fits them
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
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
    model = build_model(arch, schema, {} if arch == "wide" else {"hidden": [32, 16]}, seed=3)
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
    for cls in ARCHITECTURES.values():
        assert cls.__doc__ and "Forward" in cls.__doc__
        assert "1606.07792" in sys.modules[cls.__module__].__doc__
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
