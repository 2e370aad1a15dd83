"""Which id each of tonight's ids had in an older fitted preprocessing: the maps a warm start
copies embedding rows through (`models.warm_start`).

A refit `Categorify` renumbers its ids (the vocabulary is ordered by frequency, NVTabular 798),
so a categorical value's id is matched by value through the two saved vocabularies. The other
id fields keep their ids when their definition does not change: a hashed column or a hashed
cross hashes the raw values (`stable_ops`), so equal bucket counts (and equal input dtypes: 5
and 5.0 hash differently) mean equal ids; a bucketized column's ids are equal when its
boundaries (and clip) are. A field whose definition changed gets no map, with the reason.

    maps = id_maps(champion_preprocessor, tonight_preprocessor)
    maps.old_ids["item_id"]   # int64 (cardinality,): the champion's id of each new id, -1 none
    maps.skipped["device_x_hour"]  # "a cross of device (object), hour (int64) into 400 buckets;
                                   #  the champion's: a cross of ... into 500 buckets"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from merlin.dag import iter_nodes
from nvtabular import ops

from feature_store.categorify import FIRST_ID, FastCategorify

NONE = -1  # a new id the old preprocessing did not have


@dataclass(frozen=True)
class IdMaps:
    """Per id field (categorical columns and crosses, by output name): `old_ids[f][j]` is the
    old id of new id j (NONE when the old preprocessing had no such value); `skipped[f]` says
    why a field has no map."""

    old_ids: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def vocabulary_map(old: pd.Index, new: pd.Index, cardinality: int | None = None) -> np.ndarray:
    """Categorify ids: new id -> old id of the same value. Padding, null and OOV (0, 1, 2) map
    to themselves; value k of `new` (id 3 + k) to 3 + its position in `old`, or NONE.

    `cardinality`: the length of the map (the new table's rows; an empty vocabulary still
    has one row for its placeholder). int64 (cardinality,)."""
    n = FIRST_ID + len(new) if cardinality is None else int(cardinality)
    out = np.full(n, NONE, dtype=np.int64)
    out[:FIRST_ID] = np.arange(FIRST_ID)
    if len(new) and len(old):
        old, new = _comparable(old, new)
        pos = old.get_indexer(new)
        known = np.flatnonzero(pos >= 0)
        known = known[FIRST_ID + known < n]
        out[FIRST_ID + known] = FIRST_ID + pos[known]
    return out


def _comparable(old: pd.Index, new: pd.Index) -> tuple[pd.Index, pd.Index]:
    """An int column may be float in another window (it had nulls): compare numbers as floats."""
    kinds = {old.dtype.kind, new.dtype.kind}
    if kinds <= set("iuf") and len(kinds) > 1:
        return pd.Index(old.to_numpy(np.float64)), pd.Index(new.to_numpy(np.float64))
    return old, new


def id_maps(old: Any, new: Any) -> IdMaps:
    """The id maps from fitted preprocessor `old` (the champion's) to `new` (tonight's), for
    every id field of `new` (`feature_store.workflow.Preprocessor`s)."""
    old_defs, new_defs = _definitions(old), _definitions(new)
    old_vocabs, new_vocabs = _vocabularies(old.workflow), _vocabularies(new.workflow)
    cards = {f["name"]: int(f["cardinality"]) for f in (*new.layout["categorical"], *new.layout["crosses"])}
    old_ids: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    for name, cardinality in cards.items():
        was, now = old_defs.get(name), new_defs.get(name)
        if was is None:
            skipped[name] = "a field the champion's preprocessing did not have"
        elif was != now:
            skipped[name] = f"{now}; the champion's: {was}"
        elif now != VOCABULARY:
            old_ids[name] = np.arange(cardinality, dtype=np.int64)  # same definition, same ids
        elif name not in old_vocabs or name not in new_vocabs:
            skipped[name] = "no saved vocabulary"
        else:
            old_ids[name] = vocabulary_map(old_vocabs[name], new_vocabs[name], cardinality)
    return IdMaps(old_ids, skipped)


VOCABULARY = "a vocabulary"  # matched by value, whatever the ids


def vocabularies(pre: Any) -> dict[str, pd.Index]:
    """Every Categorify column of a fitted preprocessor: its values in id order (id = 3 + position)."""
    return _vocabularies(pre.workflow)


def _definitions(pre: Any) -> dict[str, str]:
    """Per id field, everything that decides its ids besides a vocabulary, written out: two
    equal definitions give equal ids (see `workflow.build_workflow` for how each is made)."""
    spec, dtypes = pre.spec, pre.input_dtypes
    out: dict[str, str] = {}
    clip = {c.name: c.clip_min for c in spec.continuous}

    def bucketized(boundaries: list[float], clip_min: float | None) -> str:
        return f"bucketized at {list(boundaries)}" + (f" after clipping at {clip_min}" if clip_min is not None else "")

    for c in spec.categorical:
        out[c.name] = VOCABULARY if c.hash_buckets is None else f"hashed into {c.hash_buckets} buckets as {dtypes.get(c.name)}"
    for c in spec.continuous:
        if c.bucketize is not None:
            out[c.name] = bucketized(c.bucketize, c.clip_min)
    for b in spec.bucketized:
        out[b.name] = f"{b.source} {bucketized(b.boundaries, clip.get(b.source))}"
    derived = {name for name, d in out.items() if d != VOCABULARY and not d.startswith("hashed")}
    for x in spec.crosses:
        # A cross hashes the raw value of a categorical input, the bucket id of a bucketized one.
        inputs = ", ".join(f"{c} ({out[c] if c in derived else dtypes.get(c)})" for c in x.columns)
        out[x.name] = f"a cross of {inputs} into {x.buckets} buckets"
    return out


def _vocabularies(workflow: Any) -> dict[str, pd.Index]:
    """Every Categorify column's values in id order (id = 3 + position): `FastCategorify`'s
    in-memory vocabularies, or NVTabular `Categorify`'s saved unique-value tables."""
    out: dict[str, pd.Index] = {}
    for node in iter_nodes([workflow.output_node]):
        op = node.op
        if isinstance(op, FastCategorify):
            out.update(op.vocabs)
        elif isinstance(op, ops.Categorify):
            for column, path in (op.categories or {}).items():
                table = pd.read_parquet(path)
                values = table[column][table.index >= FIRST_ID].sort_index()
                out[column] = pd.Index(values.dropna() if values.isna().all() else values)
    return out
