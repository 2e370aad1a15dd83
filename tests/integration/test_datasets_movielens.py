"""MovieLens-100k: the GroupLens-format reader and the converter on small archives the tests
write (no network), and, when the real data has been fetched, its sizes, days, both sources
agreeing row for row, the spec and the preprocessing. Tests that need the fetched data skip
with the command that fetches it."""

from __future__ import annotations

import zipfile
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_store.datasets import movielens as ml
from feature_store.datasets import store
from feature_store.errors import DataError
from feature_store.partitions import available_days, read_day, read_days, training_window
from feature_store.spec import load_spec
from feature_store.workflow import Preprocessor

DS = ml.DATASET


def _u_item_line(item_id: int, title: str, release: str, genres: set[str]) -> str:
    flags = "|".join("1" if g in genres else "0" for g in ml.GENRES)
    return f"{item_id}|{title}|{release}||http://us.imdb.com/M/x|{flags}"


def _write_zip(path: Path, u_data: str, u_user: str, u_item: str) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ml-100k/u.data", u_data.encode("latin-1"))
        archive.writestr("ml-100k/u.user", u_user.encode("latin-1"))
        archive.writestr("ml-100k/u.item", u_item.encode("latin-1"))
        archive.writestr("ml-100k/README", b"tiny test archive")
    return path


@pytest.fixture()
def tiny_zip(tmp_path: Path) -> Path:
    # 1997-09-20 00:00:00 UTC = 874713600; two ratings that day, one the next.
    u_data = "1\t10\t4\t874713600\n2\t11\t3\t874713601\n1\t11\t5\t874800000\n"
    u_user = "1|24|M|technician|85711\n2|53|F|other|T8H1N\n"
    u_item = "\n".join(
        [
            _u_item_line(10, "Misérables, Les (1995)", "01-Jan-1995", {"Drama", "War"}),
            _u_item_line(11, "unknown", "", set()),
        ]
    )
    return _write_zip(tmp_path / "ml-100k.zip", u_data, u_user, u_item + "\n")


def test_genre_columns_are_identifiers() -> None:
    assert ml.genre_column("Children's") == "genre_childrens"
    assert ml.genre_column("Film-Noir") == "genre_film_noir"
    assert ml.genre_column("Sci-Fi") == "genre_sci_fi"
    assert len({ml.genre_column(g) for g in ml.GENRES}) == 19


def test_converter_maps_grouplens_columns(tiny_zip: Path) -> None:
    events = ml.to_events(ml.read_grouplens_zip(tiny_zip))
    assert events["day"].tolist() == ["1997-09-20", "1997-09-20", "1997-09-21"]
    assert events["click"].tolist() == [1, 0, 1]  # rating >= 4
    first = events.iloc[0]
    assert first["title"] == "Misérables, Les (1995)"  # u.item is latin-1
    assert first["release_year"] == 1995.0 and first["genres"] == "Drama|War"
    assert first["genre_drama"] == 1 and first["genre_war"] == 1 and first["genre_comedy"] == 0
    assert (first["zip_prefix"], first["age"], first["gender"]) == ("8", 24, "M")
    second = events.iloc[1]
    assert np.isnan(second["release_year"]) and second["genres"] == "unknown"
    assert second["zip_prefix"] == "T"  # a Canadian postcode keeps its letter


def test_a_small_archive_is_rejected_and_nothing_is_written(tiny_zip: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    with pytest.raises(DataError, match="100000 rows in ratings") as info:
        ml.fetch_movielens(root, from_zip=tiny_zip, log=lambda _: None)
    assert str(tiny_zip) in str(info.value)
    assert not root.exists() or list(root.iterdir()) == []


@pytest.mark.parametrize(
    ("u_data", "members", "fragment"),
    [
        ("1\t10\t4\n", ("u.data", "u.user", "u.item"), "4 fields per line"),
        ("1\t10\t4\t874713600\n", ("u.data", "u.user"), "no member u.item"),
    ],
)
def test_malformed_archive_names_the_member(tmp_path: Path, u_data, members, fragment) -> None:
    path = tmp_path / "bad.zip"
    tables = {
        "u.data": u_data,
        "u.user": "1|24|M|writer|10001\n",
        "u.item": _u_item_line(10, "x", "", set()),
    }
    with zipfile.ZipFile(path, "w") as archive:
        for name in members:
            archive.writestr(f"ml-100k/{name}", tables[name])
    with pytest.raises(DataError, match=fragment) as info:
        ml.read_grouplens_zip(path)
    assert str(path) in str(info.value)


def test_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "ml-100k.zip"
    path.write_text("not a zip")
    with pytest.raises(DataError, match="readable zip"):
        ml.read_grouplens_zip(path)


# ---------------------------------------------------------------- with the fetched data


@pytest.fixture(scope="module")
def events(movielens_root: Path) -> pd.DataFrame:
    return read_days(movielens_root, DS, available_days(movielens_root, DS))


def test_fetched_sizes_and_days(events: pd.DataFrame, movielens_root: Path) -> None:
    assert len(events) == 100_000
    assert events["user_id"].nunique() == 943 and events["item_id"].nunique() == 1_682
    days = available_days(movielens_root, DS)
    assert len(days) == 213 and (days[0], days[-1]) == (date(1997, 9, 20), date(1998, 4, 22))
    assert events["click"].sum() == 55_375  # ratings 4 and 5
    stamped = pd.to_datetime(events["ts"], unit="s", utc=True).dt.strftime("%Y-%m-%d")
    assert (stamped == events["day"]).all()
    assert events["ts"].is_monotonic_increasing
    manifest = store.read_manifest(movielens_root, DS)
    assert manifest["rows"] == 100_000 and "no redistribution" in manifest["licence"]


def test_second_fetch_does_nothing(movielens_root: Path) -> None:
    before = store.read_manifest(movielens_root, DS)
    said = []
    assert ml.fetch_movielens(movielens_root, log=said.append) is None
    assert "nothing to do" in said[0] and store.read_manifest(movielens_root, DS) == before


def test_grouplens_archive_and_wheel_convert_identically(
    events: pd.DataFrame, tmp_path: Path
) -> None:
    """Write the fetched ratings back in GroupLens' own format (u.data, u.user, u.item,
    latin-1) and convert that archive: the same 100,000 rows come out."""
    users = events.drop_duplicates("user_id").sort_values("user_id")
    items = events.drop_duplicates("item_id").sort_values("item_id")
    u_data = events[["user_id", "item_id", "rating", "ts"]].to_csv(
        sep="\t", header=False, index=False
    )
    u_user = users[["user_id", "age", "gender", "occupation", "zip_code"]].to_csv(
        sep="|", header=False, index=False
    )
    lines = []
    for row in items.itertuples():
        release = "" if np.isnan(row.release_year) else f"01-Jan-{int(row.release_year)}"
        genres = {g for g in ml.GENRES if getattr(row, ml.genre_column(g)) == 1}
        lines.append(_u_item_line(row.item_id, row.title, release, genres))
    archive = _write_zip(tmp_path / "ml-100k.zip", u_data, u_user, "\n".join(lines) + "\n")
    root = tmp_path / "data"
    manifest = ml.fetch_movielens(root, from_zip=archive, log=lambda _: None)
    assert manifest["rows"] == 100_000 and manifest["source"].startswith("GroupLens archive")
    again = read_days(root, DS, available_days(root, DS))
    pd.testing.assert_frame_equal(again, events, check_dtype=False)


def test_spec_preprocesses_a_night_with_user_and_item_fields(movielens_root: Path) -> None:
    spec = load_spec("movielens_100k")
    train_days, holdout = training_window(movielens_root, DS, date(1998, 4, 1), window_days=7)
    assert holdout == date(1998, 3, 31)
    train = read_days(movielens_root, DS, train_days, spec)
    pre = Preprocessor.fit(spec, train)
    arrays = pre.transform(read_day(movielens_root, DS, holdout, spec))
    assert arrays.cross.shape == (2_217, 4) and np.isfinite(arrays.cont).all()
    assert pre.layout["user_fields"] == [
        "user_id",
        "gender",
        "occupation",
        "zip_prefix",
        "age_bucket",
    ]
    assert (
        pre.layout["item_fields"][:2] == ["item_id", "genres"]
        and "release_decade" in pre.layout["item_fields"]
    )

    from models import build_model
    from models.schema import InputSchema

    schema = InputSchema.from_layout(pre.layout)
    for arch in ("ncf", "two_tower", "split_network"):  # they read the spec's user/item columns
        build_model(arch, schema)
