"""Synthetic click logs with a known ground truth, for the demo loop and the tests.

The click probability is planted so that the Wide & Deep argument can be checked:
  logit = b0
        + seg_cat[user_segment, item_category]   # memorization: a wide cross learns it directly
        + dev_hour[device, hour]                 # memorization
        + <u_user, v_item>                       # generalization: needs embeddings (deep part)
        + user_bias + item_bias                  # what a per-id linear model can learn
        - 0.5 * log(position) - 0.15 * z(log price)
A linear model on ids and crosses cannot represent the dot product; an MLP on per-field
embeddings can approximate it (item factors lean on their category, so the user and
category embeddings carry most of it), but must discover the 600 segment x category
effects slowly, which the wide cross memorizes directly. The true probability is written
as `true_ctr` so the oracle ceiling can be reported.

The world (users, items, factors, effects) depends on the seed only; every day draws its
own impressions from a seed derived from (seed, day), so regenerating one day, or a
longer range, never changes the others.

Big days are streamed. A day of at most `part_rows` rows (default 1,000,000) is drawn whole
by `generate_day` and written as one `part-0.parquet`, exactly as before (the tests and the
recorded benchmark numbers use these bytes). A bigger day is drawn chunk by chunk in
timestamp order by `day_chunks` (memory: one chunk, whatever the day's size) and written
as `part-00000.parquet`, `part-00001.parquet`, ... of at most `part_rows` rows each, in row
groups of `row_group_rows`. Its rows depend on the seed and the day only, not on
`part_rows` or the chunk size, as long as the day is streamed; they are not the rows that
`generate_day` would draw for the same size (same distributions, another draw).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feature_store.partitions import day_dir

N_USERS = 5_000
N_ITEMS = 2_000
N_SEGMENTS = 20
N_CATEGORIES = 30
LATENT_DIM = 8
ZIPF_EXPONENT = 1.1
DEVICES = ("mobile", "desktop", "tablet")
DEVICE_PROBS = (0.55, 0.35, 0.10)
# Intercept tuned so the mean CTR is about 0.15 (measured on the default world).
INTERCEPT = -1.95
SEG_CAT_STD = 1.0
DEV_HOUR_STD = 0.5
# Above 1.0 on purpose: in a quick check (5 epochs, 16-dim embeddings, MLP 256-128, 9 train
# days, day 10 held out) Wide & Deep beat a tuned wide-only model by only ~0.01 AUC when the
# dot product's std over impressions was ~1.1, and by ~0.02 at ~1.3 (deep-only by ~0.024).
DOT_STD = 1.3
BIAS_STD = 0.3
# Share of a latent factor that comes from its group centroid. Items of a category share
# most of their direction, so the deep part can learn "this user likes this category" from
# the user and category embeddings and transfer it to the category's tail items. Users get
# no segment share: segment x category is the wide cross's job, and a shared share would
# let the wide part learn the latent signal too.
USER_CENTROID_SHARE = 0.0
ITEM_CENTROID_SHARE = 0.9
POSITION_SLOPE = 0.5
PRICE_SLOPE = 0.15
PRICE_LOG_MEAN = 3.0
PRICE_LOG_STD = 0.7
PRICE_NOISE_STD = 0.05
DEFAULT_PART_ROWS = 1_000_000  # a bigger day is streamed into several part files
ROW_GROUP_ROWS = 131_072  # rows per parquet row group of a streamed day (and per drawn chunk)

# Hour-of-day traffic: quiet nights, a lunch bump and an evening peak.
_HOUR_WEIGHTS = np.array(
    [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 3.5, 3.5, 4,
     4.5, 4, 3.5, 3.5, 3.5, 4, 5, 6, 6.5, 6, 4, 2],
    dtype=np.float64,
)


@dataclass(frozen=True)
class World:
    """Everything that is fixed across days: entities, their attributes and effects."""

    user_ids: np.ndarray  # (U,) str
    item_ids: np.ndarray  # (I,) str
    user_segment: np.ndarray  # (U,) int
    item_category: np.ndarray  # (I,) int
    user_pop: np.ndarray  # (U,) sampling probabilities
    item_pop: np.ndarray  # (I,) sampling probabilities
    user_factors: np.ndarray  # (U, K)
    item_factors: np.ndarray  # (I, K)
    user_bias: np.ndarray  # (U,)
    item_bias: np.ndarray  # (I,)
    item_log_price: np.ndarray  # (I,)
    seg_cat: np.ndarray  # (S, C)
    dev_hour: np.ndarray  # (3, 24)


def _zipf_probs(n: int, rng: np.random.Generator) -> np.ndarray:
    """Zipf-like popularity, assigned to ids in random order (id 0 is not the most popular)."""
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** ZIPF_EXPONENT
    probs = np.empty(n)
    probs[rng.permutation(n)] = weights / weights.sum()
    return probs


def _factors(
    share: float, groups: np.ndarray, centroids: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Unit-variance factors: a group centroid share plus an individual part."""
    own = rng.standard_normal((len(groups), LATENT_DIM))
    return share * centroids[groups] + np.sqrt(1.0 - share**2) * own


def _dot_std(u: np.ndarray, pu: np.ndarray, v: np.ndarray, pv: np.ndarray) -> float:
    """Std of <u, v> for u ~ pu and v ~ pv drawn independently, in closed form:
    E[<u,v>^2] = trace(E[uu^T] E[vv^T]) and E[<u,v>] = <E u, E v>."""
    second = np.trace((u.T * pu) @ u @ ((v.T * pv) @ v))
    mean = (pu @ u) @ (pv @ v)
    return float(np.sqrt(second - mean**2))


def make_world(seed: int) -> World:
    """Draw the entities and effects once from the seed."""
    rng = np.random.default_rng([seed, 0])
    user_segment = rng.integers(0, N_SEGMENTS, N_USERS)
    item_category = rng.integers(0, N_CATEGORIES, N_ITEMS)
    segment_centroids = rng.standard_normal((N_SEGMENTS, LATENT_DIM))
    category_centroids = rng.standard_normal((N_CATEGORIES, LATENT_DIM))
    user_factors = _factors(USER_CENTROID_SHARE, user_segment, segment_centroids, rng)
    item_factors = _factors(ITEM_CENTROID_SHARE, item_category, category_centroids, rng)
    user_pop = _zipf_probs(N_USERS, rng)
    item_pop = _zipf_probs(N_ITEMS, rng)
    # Scale both sides so the dot product has exactly DOT_STD over impressions (popular
    # users and items dominate), whatever the seed: the signal strength is a constant.
    scale = np.sqrt(DOT_STD / _dot_std(user_factors, user_pop, item_factors, item_pop))
    return World(
        user_ids=np.array([f"u{i:05d}" for i in range(N_USERS)], dtype=object),
        item_ids=np.array([f"i{i:05d}" for i in range(N_ITEMS)], dtype=object),
        user_segment=user_segment,
        item_category=item_category,
        user_pop=user_pop,
        item_pop=item_pop,
        user_factors=user_factors * scale,
        item_factors=item_factors * scale,
        user_bias=rng.normal(0.0, BIAS_STD, N_USERS),
        item_bias=rng.normal(0.0, BIAS_STD, N_ITEMS),
        item_log_price=rng.normal(PRICE_LOG_MEAN, PRICE_LOG_STD, N_ITEMS),
        seg_cat=rng.normal(0.0, SEG_CAT_STD, (N_SEGMENTS, N_CATEGORIES)),
        dev_hour=rng.normal(0.0, DEV_HOUR_STD, (len(DEVICES), 24)),
    )


def _day_seed(seed: int, day: date) -> list[int]:
    return [seed, 1, day.toordinal()]


def _true_ctr(world: World, users, items, device, hour, position, log_price) -> np.ndarray:
    logit = (
        INTERCEPT
        + world.seg_cat[world.user_segment[users], world.item_category[items]]
        + world.dev_hour[device, hour]
        + np.einsum("nk,nk->n", world.user_factors[users], world.item_factors[items])
        + world.user_bias[users]
        + world.item_bias[items]
        - POSITION_SLOPE * np.log(position)
        - PRICE_SLOPE * (log_price - PRICE_LOG_MEAN) / PRICE_LOG_STD
    )
    return 1.0 / (1.0 + np.exp(-logit))


def _midnight(day: date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


_SEGMENT_NAMES = np.array([f"seg{s:02d}" for s in range(N_SEGMENTS)], dtype=object)
_CATEGORY_NAMES = np.array([f"cat{c:02d}" for c in range(N_CATEGORIES)], dtype=object)


def generate_day(world: World, day: date, rows: int, seed: int) -> pd.DataFrame:
    """One day of impressions, sorted by timestamp; vectorised (20k rows in a few ms). The
    whole day is in memory: for big days see `day_chunks`."""
    rng = np.random.default_rng(_day_seed(seed, day))
    users = rng.choice(N_USERS, size=rows, p=world.user_pop)
    items = rng.choice(N_ITEMS, size=rows, p=world.item_pop)
    device = rng.choice(len(DEVICES), size=rows, p=DEVICE_PROBS)
    hour = rng.choice(24, size=rows, p=_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum())
    position = rng.integers(1, 11, rows)
    log_price = world.item_log_price[items] + rng.normal(0.0, PRICE_NOISE_STD, rows)
    seconds = rng.integers(0, 3600, rows)
    true_ctr = _true_ctr(world, users, items, device, hour, position, log_price)
    click = (rng.random(rows) < true_ctr).astype(np.int64)

    ts = _midnight(day) + hour * 3600 + seconds
    order = np.argsort(ts, kind="stable")
    frame = pd.DataFrame(
        {
            "user_id": world.user_ids[users],
            "item_id": world.item_ids[items],
            "user_segment": _SEGMENT_NAMES[world.user_segment[users]],
            "item_category": _CATEGORY_NAMES[world.item_category[items]],
            "device": np.array(DEVICES, dtype=object)[device],
            "hour": hour.astype(np.int64),
            "position": position.astype(np.int64),
            "price": np.round(np.exp(log_price), 2),
            "day": day.isoformat(),
            "ts": ts.astype(np.int64),
            "click": click,
            "true_ctr": true_ctr,
        }
    )
    return frame.iloc[order].reset_index(drop=True)


# The streamed day's independent draws, one generator each, so that a chunk of n rows takes
# the next n values of every stream: the rows do not depend on how the day is cut.
_STREAMS = ("time", "user", "item", "device", "position", "price", "click")


def _pick(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    """n draws from the distribution with this cdf, one uniform each (what Generator.choice
    does, but without its per-call state)."""
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(cdf) - 1)


def _cdf(p) -> np.ndarray:
    cdf = np.cumsum(np.asarray(p, dtype=np.float64))
    return cdf / cdf[-1]


def _arrow_strings(values: np.ndarray) -> pa.Array:
    return pa.array(values.tolist(), type=pa.string())


def day_chunks(
    world: World, day: date, rows: int, seed: int, chunk_rows: int = ROW_GROUP_ROWS
) -> Iterator[pa.Table]:
    """One day of impressions in timestamp order, `chunk_rows` rows at a time, as Arrow
    tables with `generate_day`'s columns and types. Memory is one chunk; the rows are the
    same for every chunk_rows."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    streams = {
        name: np.random.default_rng([seed, 2, day.toordinal(), k]) for k, name in enumerate(_STREAMS)
    }
    # Impressions per second of the day (86,400 counts): the timestamps come out sorted.
    second_p = np.repeat(_HOUR_WEIGHTS / _HOUR_WEIGHTS.sum() / 3600, 3600)
    per_second = streams["time"].multinomial(rows, second_p)
    ends = np.cumsum(per_second)
    user_cdf, item_cdf, device_cdf = _cdf(world.user_pop), _cdf(world.item_pop), _cdf(DEVICE_PROBS)
    names = {
        "user_id": pa.array(world.user_ids.tolist(), type=pa.string()),
        "item_id": pa.array(world.item_ids.tolist(), type=pa.string()),
        "user_segment": _arrow_strings(_SEGMENT_NAMES),
        "item_category": _arrow_strings(_CATEGORY_NAMES),
        "device": pa.array(list(DEVICES), type=pa.string()),
    }
    midnight, iso = _midnight(day), day.isoformat()
    for first in range(0, rows, chunk_rows):
        n = min(chunk_rows, rows - first)
        second = np.searchsorted(ends, np.arange(first, first + n), side="right")
        hour = second // 3600
        users = _pick(streams["user"], user_cdf, n)
        items = _pick(streams["item"], item_cdf, n)
        device = _pick(streams["device"], device_cdf, n)
        position = 1 + (streams["position"].random(n) * 10).astype(np.int64)
        log_price = world.item_log_price[items] + streams["price"].normal(0.0, PRICE_NOISE_STD, n)
        true_ctr = _true_ctr(world, users, items, device, hour, position, log_price)
        click = (streams["click"].random(n) < true_ctr).astype(np.int64)
        yield pa.table(
            {
                # take() from the small vocabularies: no Python string per row.
                "user_id": pc.take(names["user_id"], pa.array(users)),
                "item_id": pc.take(names["item_id"], pa.array(items)),
                "user_segment": pc.take(names["user_segment"], pa.array(world.user_segment[users])),
                "item_category": pc.take(names["item_category"], pa.array(world.item_category[items])),
                "device": pc.take(names["device"], pa.array(device)),
                "hour": pa.array(hour.astype(np.int64)),
                "position": pa.array(position),
                "price": pa.array(np.round(np.exp(log_price), 2)),
                "day": pa.array(np.full(n, iso, dtype=object), type=pa.string()),
                "ts": pa.array((midnight + second).astype(np.int64)),
                "click": pa.array(click),
                "true_ctr": pa.array(true_ctr),
            }
        )


def write_day(
    root: Path, dataset: str, day: date | str, df: pd.DataFrame, fmt: str = "parquet", part: int = 0
) -> Path:
    """Write one partition file atomically (temp file in the same dir, then rename), so a
    reader never sees a half-written file."""
    if fmt not in {"parquet", "csv"}:
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    directory = day_dir(root, dataset, day)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"part-{part}.{fmt}"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        if fmt == "parquet":
            df.to_parquet(tmp_name, index=False, engine="pyarrow")
        else:
            df.to_csv(tmp_name, index=False)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def write_day_parts(
    root: Path,
    dataset: str,
    day: date | str,
    chunks: Iterator[pa.Table],
    part_rows: int = DEFAULT_PART_ROWS,
    row_group_rows: int = ROW_GROUP_ROWS,
) -> list[Path]:
    """Stream Arrow chunks into `part-00000.parquet`, `part-00001.parquet`, ... of at most
    `part_rows` rows each (zero-padded: name order is row order), each file written
    atomically (temp file, then rename). Other `part-*` files of the day (an earlier
    generation of another size) are removed once the new ones are in place."""
    if part_rows < 1 or row_group_rows < 1:
        raise ValueError(f"part_rows and row_group_rows must be >= 1, got {part_rows}, {row_group_rows}")
    directory = day_dir(root, dataset, day)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    writer: pq.ParquetWriter | None = None
    tmp_name, in_part = "", 0

    def close() -> None:
        nonlocal writer
        if writer is not None:
            writer.close()
            writer = None
            target = directory / f"part-{len(written):05d}.parquet"
            os.replace(tmp_name, target)
            written.append(target)

    try:
        for chunk in chunks:
            offset = 0
            while offset < chunk.num_rows:
                if writer is None:
                    fd, tmp_name = tempfile.mkstemp(prefix=".part.", suffix=".tmp", dir=directory)
                    os.close(fd)
                    writer, in_part = pq.ParquetWriter(tmp_name, chunk.schema), 0
                take = min(part_rows - in_part, chunk.num_rows - offset)
                writer.write_table(chunk.slice(offset, take), row_group_size=row_group_rows)
                offset, in_part = offset + take, in_part + take
                if in_part == part_rows:
                    close()
        close()
    except BaseException:
        if writer is not None:
            writer.close()
            Path(tmp_name).unlink(missing_ok=True)
        raise
    _remove_other_parts(directory, written)
    return written


_GENERATED_PART = re.compile(r"^part-(0|\d{5})\.parquet$")


def _remove_other_parts(directory: Path, keep: list[Path]) -> None:
    """Remove the files an earlier generation of this day wrote that this one did not
    rewrite (another size, another part count); other files of the day are left alone."""
    names = {p.name for p in keep}
    for path in directory.iterdir():
        if _GENERATED_PART.match(path.name) and path.name not in names:
            path.unlink()


def generate_synthetic(
    root: Path,
    dataset: str = "synthetic_clicks",
    start: date = date(2026, 1, 1),
    days: int = 10,
    rows_per_day: int = 20_000,
    seed: int = 7,
    part_rows: int = DEFAULT_PART_ROWS,
    row_group_rows: int = ROW_GROUP_ROWS,
) -> list[Path]:
    """Write `days` daily partitions starting at `start`; the same seed gives identical files.
    A day of at most `part_rows` rows is one file (`generate_day`); a bigger one is streamed
    into several (`day_chunks`, see the module docstring). Returns every file written."""
    if part_rows < 1:
        raise ValueError(f"part_rows must be >= 1, got {part_rows}")
    world = make_world(seed)
    paths: list[Path] = []
    for offset in range(days):
        day = start + dt.timedelta(days=offset)
        if rows_per_day <= part_rows:
            path = write_day(Path(root), dataset, day, generate_day(world, day, rows_per_day, seed))
            _remove_other_parts(path.parent, [path])
            paths.append(path)
        else:
            chunks = day_chunks(world, day, rows_per_day, seed, chunk_rows=row_group_rows)
            paths += write_day_parts(Path(root), dataset, day, chunks, part_rows, row_group_rows)
    return paths
