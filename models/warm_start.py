"""Warm start: initialise a freshly built model from a trained one (the champion) of the
same architecture, across a refit of the preprocessing.

A refit renumbers the categorical ids (the vocabulary is ordered by frequency), so an
embedding row cannot be copied by position. The caller gives, per field, where each new id
came from (`feature_store.id_maps`):

    old_ids[f]: int64 (cardinality_f,)   old_ids[f][j] = the champion's id of new id j, or -1

and every `FusedEmbedding` (embedding tables, and the wide weights of `WideLinear`, which
are a table of dimension 1) is remapped field by field through both tables' offsets:

    W_new[offset_new_f + j] = W_old[offset_old_f + old_ids[f][j]]     where old_ids[f][j] >= 0

Rows of ids the champion never had keep the model's own initialisation. Every other
parameter and buffer (dense layers, biases, continuous-column vectors, BatchNorm running
statistics) is copied whole when the champion has it with the same shape. What is not
copied is reported with the reason; nothing is silently skipped.

Only weights move: the optimizer state (Adam's moments) is not part of a model and starts
fresh, as in any new training run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from models.layers import FusedEmbedding


@dataclass(frozen=True)
class WarmStartReport:
    """What `warm_start` copied.

    copied_share: per field, the share of the new model's rows of that field (over every
        table holding it) that got a champion row; special ids (padding, null, OOV) count.
    copied: state keys copied (a table counts when at least one of its rows was).
    not_copied: state key (or `key[field]` for one field of a table) -> why it kept its
        fresh initialisation.
    """

    copied_share: dict[str, float] = field(default_factory=dict)
    copied: tuple[str, ...] = ()
    not_copied: dict[str, str] = field(default_factory=dict)


def shape_conflicts(arch: str, hparams: Mapping[str, Any] | None, champion: nn.Module) -> list[str]:
    """Why tonight's hyper-parameters cannot start from `champion` (empty: they can).

    `arch` with `hparams` is built on the champion's own input schema (on the meta device: no
    memory, no initialisation) and every state tensor is compared with the champion's: a
    difference comes from a hyper-parameter that sets a shape (an embedding dimension, hidden
    widths, `use_crosses`, ...), not from the vocabularies, which `warm_start` remaps."""
    from models import build_model

    with torch.device("meta"):
        probe = build_model(arch, champion.schema, hparams)
    old, new = champion.state_dict(), probe.state_dict()
    out = []
    for key, value in new.items():
        if key not in old:
            out.append(f"{key}: not in the champion")
        elif tuple(old[key].shape) != tuple(value.shape):
            out.append(f"{key}: {_shape(value)} vs the champion's {_shape(old[key])}")
    out += [f"{key}: only in the champion" for key in old if key not in new]
    return out


def warm_start(model: nn.Module, champion: nn.Module, old_ids: Mapping[str, np.ndarray],
               skipped: Mapping[str, str] | None = None) -> WarmStartReport:
    """Copy `champion`'s weights into `model` in place (see the module docstring).

    Args:
        model: the freshly built model (tonight's schema); its initialisation stays where
            nothing is copied.
        champion: the trained model; left unchanged.
        old_ids: field name -> int64 (new cardinality,) old id per new id, -1 for none.
        skipped: field name -> why that field has no map (e.g. a different bucket count);
            the reason is reported for its rows.
    Returns the report; every state key of `model` is either in `copied` or `not_copied`.
    """
    skipped = dict(skipped or {})
    new_state, old_state = model.state_dict(), champion.state_dict()
    old_tables = {path: m for path, m in champion.named_modules() if isinstance(m, FusedEmbedding)}
    copied: list[str] = []
    not_copied: dict[str, str] = {}
    rows: dict[str, list[int]] = {}  # field -> [rows copied, rows in its tables]
    done: set[str] = set()
    with torch.no_grad():
        for path, table in model.named_modules():
            if not isinstance(table, FusedEmbedding):
                continue
            key = f"{path}.embedding.weight" if path else "embedding.weight"
            done.add(key)
            for name, card in zip(table.names or (), table.cardinalities):
                rows.setdefault(name, [0, 0])[1] += card
            reason = _table_mismatch(table, old_tables.get(path))
            if reason:
                not_copied[key] = reason
                continue
            n, fields_missed = _remap_table(table, old_tables[path], old_ids, skipped, rows)
            not_copied.update({f"{key}[{f}]": why for f, why in fields_missed.items()})
            if n:
                copied.append(key)
            elif not fields_missed:
                not_copied[key] = "no row of it is known to the champion"
        for key, value in new_state.items():
            if key in done:
                continue
            old = old_state.get(key)
            if old is None:
                not_copied[key] = "not in the champion"
            elif old.shape != value.shape:
                not_copied[key] = f"shape {_shape(value)} vs the champion's {_shape(old)}"
            else:
                value.copy_(old)
                copied.append(key)
    share = {name: (c / total if total else 0.0) for name, (c, total) in rows.items()}
    return WarmStartReport(copied_share=share, copied=tuple(copied), not_copied=not_copied)


def _table_mismatch(table: FusedEmbedding, old: nn.Module | None) -> str:
    if old is None:
        return "no such table in the champion"
    if not isinstance(old, FusedEmbedding):
        return f"the champion's module there is a {type(old).__name__}"
    if table.names is None or old.names is None:
        return "anonymous fields (FusedEmbedding built without names)"
    if old.dim != table.dim:
        return f"dimension {table.dim} vs the champion's {old.dim}"
    return ""


def _remap_table(table: FusedEmbedding, old: FusedEmbedding, old_ids: Mapping[str, np.ndarray],
                 skipped: Mapping[str, str], rows: dict[str, list[int]]) -> tuple[int, dict[str, str]]:
    """Copy the known rows of every field of `table` from `old`; returns the rows copied and
    the fields not copied with why."""
    new_offsets = np.cumsum([0, *table.cardinalities[:-1]])
    old_offsets = dict(zip(old.names, np.cumsum([0, *old.cardinalities[:-1]])))
    old_cards = dict(zip(old.names, old.cardinalities))
    dst, src, missed = [], [], {}
    for name, card, offset in zip(table.names, table.cardinalities, new_offsets):
        ids = old_ids.get(name)
        if name not in old_offsets:
            missed[name] = "a field the champion did not have"
        elif ids is None:
            missed[name] = skipped.get(name, "no id map for it")
        elif len(ids) != card:
            missed[name] = f"an id map of {len(ids)} ids for {card} rows"
        else:
            ids = np.asarray(ids, dtype=np.int64)
            known = np.flatnonzero((ids >= 0) & (ids < old_cards[name]))
            dst.append(offset + known)
            src.append(old_offsets[name] + ids[known])
            rows[name][0] += len(known)
    if not dst:
        return 0, missed
    dst_t, src_t = torch.from_numpy(np.concatenate(dst)), torch.from_numpy(np.concatenate(src))
    table.embedding.weight.index_copy_(0, dst_t, old.embedding.weight.index_select(0, src_t))  # (R, D)
    return int(dst_t.numel()), missed


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(s) for s in t.shape) or "scalar"
