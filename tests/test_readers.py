"""Readers (rdistill.data.readers): every supported format -> the canonical interaction log, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rdistill.config import DataConfig
from rdistill.data.readers import LOG_COLUMNS, read_log
from rdistill.errors import DataError

ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western"]


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


def _read(tmp_path: Path, fmt: str, path: str = "src", **kwargs):
    return read_log(DataConfig(format=fmt, root=str(tmp_path), path=path, **kwargs))


def _assert_log(frame: pd.DataFrame, users: list[str], items: list[str], timestamps: list[float]) -> None:
    assert list(frame.columns) == LOG_COLUMNS
    assert frame["user_id"].tolist() == users
    assert frame["item_id"].tolist() == items
    assert frame["timestamp"].tolist() == timestamps
    assert frame["timestamp"].dtype == np.float64
    assert frame["row_order"].dtype == np.int64
    assert frame["row_order"].tolist() == list(range(len(users)))
    assert all(isinstance(u, str) for u in frame["user_id"]) and all(isinstance(i, str) for i in frame["item_id"])


def _texts(items: pd.DataFrame) -> dict[str, str]:
    assert list(items.columns) == ["item_id", "text"]
    return dict(zip(items["item_id"], items["text"]))


def _data_error(match_all: list[str], fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    for part in match_all:
        assert part in message, f"{part!r} not in {message!r}"
    return message


# ----------------------------------------------------------------------------------------- movielens


@pytest.fixture
def movielens_csv(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    _write(folder / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.0,100\n1,20,3.5,90\n2,10,5.0,100\n")
    _write(folder / "movies.csv",
           'movieId,title,genres\n10,"Heat, The (1995)",Action|Crime\n20,Toy Story (1995),(no genres listed)\n'
           "30,Other (2000),Drama\n")
    _write(folder / "tags.csv",
           "userId,movieId,tag,timestamp\n1,10,Classic,1\n2,10,classic,2\n1,10,Pacino,3\n1,20,  ,4\n")
    return folder


def test_movielens_csv(tmp_path, movielens_csv):
    raw = _read(tmp_path, "movielens")
    _assert_log(raw.interactions, ["1", "1", "2"], ["10", "20", "10"], [100.0, 90.0, 100.0])
    assert _texts(raw.items) == {
        "10": "Heat, The (1995). Genres: Action, Crime. Tags: classic, pacino",
        "20": "Toy Story (1995)",
        "30": "Other (2000). Genres: Drama",
    }
    assert raw.sources == {"ratings": movielens_csv / "ratings.csv", "movies": movielens_csv / "movies.csv",
                           "tags": movielens_csv / "tags.csv"}


def test_movielens_without_tags(tmp_path, movielens_csv):
    raw = _read(tmp_path, "movielens", include_tags=False)
    assert _texts(raw.items)["10"] == "Heat, The (1995). Genres: Action, Crime"
    assert "tags" not in raw.sources


def test_movielens_min_rating_keeps_order(tmp_path, movielens_csv):
    raw = _read(tmp_path, "movielens", min_rating=4.0)
    frame = raw.interactions
    assert frame["user_id"].tolist() == ["1", "2"]
    assert frame["item_id"].tolist() == ["10", "10"]
    assert frame["timestamp"].tolist() == [100.0, 100.0]
    assert frame["row_order"].is_monotonic_increasing and frame["row_order"].is_unique


def test_movielens_top_tags_are_limited_and_deterministic(tmp_path):
    folder = tmp_path / "src"
    _write(folder / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.0,100\n")
    _write(folder / "movies.csv", "movieId,title,genres\n10,A (1990),Drama\n")
    tags = ["g", "f", "e", "d", "c", "b", "a", "z", "Z"]  # z twice (case-folded), the rest once
    _write(folder / "tags.csv", "userId,movieId,tag,timestamp\n" + "".join(f"1,10,{t},1\n" for t in tags))
    raw = _read(tmp_path, "movielens")
    assert _texts(raw.items)["10"] == "A (1990). Genres: Drama. Tags: z, a, b, c, d"


def test_movielens_without_movies_file_has_no_items(tmp_path):
    _write(tmp_path / "src" / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.0,100\n")
    raw = _read(tmp_path, "movielens")
    assert raw.items is None
    assert list(raw.sources) == ["ratings"]


def test_movielens_1m_dat(tmp_path):
    folder = tmp_path / "src"
    _write(folder / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    _write(folder / "movies.dat",
           "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::Château (1996)::Animation|Children's\n",
           encoding="latin-1")
    raw = _read(tmp_path, "movielens")
    _assert_log(raw.interactions, ["1", "1", "2"], ["1193", "661", "1193"],
                [978300760.0, 978302109.0, 978298413.0])
    assert _texts(raw.items) == {
        "1193": "One Flew Over the Cuckoo's Nest (1975). Genres: Drama",
        "661": "Château (1996). Genres: Animation, Children's",
    }


def test_movielens_100k(tmp_path):
    folder = tmp_path / "src"
    _write(folder / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t1\t878887116\n")
    flags_242 = ["0"] * 19
    for genre in ("Animation", "Children's", "Comedy"):
        flags_242[ML100K_GENRES.index(genre)] = "1"
    flags_302 = ["0"] * 19
    flags_302[ML100K_GENRES.index("Crime")] = "1"
    _write(folder / "u.item",
           "242|Kolya (1996)|24-Jan-1997||http://example.org/kolya|" + "|".join(flags_242) + "\n"
           "302|L.A. Confidential (1997)|01-Jan-1997||http://example.org/la|" + "|".join(flags_302) + "\n",
           encoding="latin-1")
    _write(folder / "u.genre", "".join(f"{g}|{i}\n" for i, g in enumerate(ML100K_GENRES)) + "\n")
    raw = _read(tmp_path, "movielens")
    _assert_log(raw.interactions, ["196", "186", "196"], ["242", "302", "302"],
                [881250949.0, 891717742.0, 878887116.0])
    assert _texts(raw.items) == {
        "242": "Kolya (1996). Genres: Animation, Children's, Comedy",
        "302": "L.A. Confidential (1997). Genres: Crime",
    }


def test_movielens_100k_without_genre_list(tmp_path):
    folder = tmp_path / "src"
    _write(folder / "u.data", "196\t242\t3\t881250949\n")
    _write(folder / "u.item", "242|Kolya (1996)|24-Jan-1997||http://x|" + "|".join(["0"] * 19) + "\n")
    _data_error([str(folder / "u.genre")], _read, tmp_path, "movielens")


def test_movielens_no_ratings_file(tmp_path):
    (tmp_path / "src").mkdir()
    _data_error([str(tmp_path / "src"), "ratings.csv"], _read, tmp_path, "movielens")


def test_movielens_missing_rating_column(tmp_path):
    path = _write(tmp_path / "src" / "ratings.csv", "userId,movieId,timestamp\n1,10,100\n")
    _data_error([str(path), "'rating'"], _read, tmp_path, "movielens")


def test_movielens_bad_timestamp_in_dat_names_line(tmp_path):
    path = _write(tmp_path / "src" / "ratings.dat", "1::10::5::100\n1::11::5::soon\n")
    _data_error([str(path), "'timestamp'", "line 2", "'soon'"], _read, tmp_path, "movielens")


def test_movielens_header_only_ratings(tmp_path):
    path = _write(tmp_path / "src" / "ratings.csv", "userId,movieId,rating,timestamp\n")
    _data_error([str(path), "no interactions"], _read, tmp_path, "movielens")


def test_movielens_duplicate_movie(tmp_path):
    folder = tmp_path / "src"
    _write(folder / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.0,100\n")
    path = _write(folder / "movies.csv", "movieId,title,genres\n10,A,Drama\n20,B,Drama\n10,C,Drama\n")
    _data_error([str(path), "'10'", "line 4"], _read, tmp_path, "movielens")


# --------------------------------------------------------------------------------------------- s3rec


def test_s3rec_without_attributes(tmp_path):
    _write(tmp_path / "src" / "seq.txt", "1 5 3 7\n2 3 5\n\n3 7 7 9\n")
    raw = _read(tmp_path, "s3rec")
    _assert_log(raw.interactions, ["1", "1", "1", "2", "2", "3", "3", "3"],
                ["5", "3", "7", "3", "5", "7", "7", "9"], [0.0, 1.0, 2.0, 0.0, 1.0, 0.0, 1.0, 2.0])
    assert raw.items is None
    assert raw.sources == {"sequences": tmp_path / "src" / "seq.txt"}


def test_s3rec_with_attributes_json(tmp_path):
    folder = tmp_path / "src"
    _write(folder / "Beauty.txt", "1 5 3 7\n2 3 5\n")
    _write(folder / "Beauty_item2attributes.json", json.dumps({"5": [1, 2], "3": [], "7": ["a"]}))
    raw = _read(tmp_path, "s3rec", interactions_file="Beauty.txt", items_file="Beauty_item2attributes.json")
    _assert_log(raw.interactions, ["1", "1", "1", "2", "2"], ["5", "3", "7", "3", "5"], [0.0, 1.0, 2.0, 0.0, 1.0])
    assert _texts(raw.items) == {"5": "attributes: 1 2", "3": "", "7": "attributes: a"}
    assert raw.sources == {"sequences": folder / "Beauty.txt", "attributes": folder / "Beauty_item2attributes.json"}
    # the attributes file is also found without being named, and the path may point at the text file itself
    assert _texts(_read(tmp_path, "s3rec").items) == _texts(raw.items)
    direct = _read(tmp_path, "s3rec", path="src/Beauty.txt", items_file="Beauty_item2attributes.json")
    assert _texts(direct.items) == _texts(raw.items)


def test_s3rec_ambiguous_folder(tmp_path):
    _write(tmp_path / "src" / "a.txt", "1 2 3\n")
    _write(tmp_path / "src" / "b.txt", "1 2 3\n")
    _data_error(["data.interactions_file", "a.txt", "b.txt"], _read, tmp_path, "s3rec")


def test_s3rec_unknown_item_in_attributes(tmp_path):
    folder = tmp_path / "src"
    _write(folder / "seq.txt", "1 5 3\n")
    path = _write(folder / "attrs.json", json.dumps({"5": [1], "99": [2]}))
    _data_error([str(path), "'99'"], _read, tmp_path, "s3rec", items_file="attrs.json")


def test_s3rec_attributes_not_a_list(tmp_path):
    folder = tmp_path / "src"
    _write(folder / "seq.txt", "1 5 3\n")
    path = _write(folder / "attrs.json", json.dumps({"5": "x"}))
    _data_error([str(path), "'5'"], _read, tmp_path, "s3rec", items_file="attrs.json")


def test_s3rec_attributes_bad_json(tmp_path):
    folder = tmp_path / "src"
    _write(folder / "seq.txt", "1 5 3\n")
    path = _write(folder / "attrs.json", "{not json")
    _data_error([str(path), "JSON"], _read, tmp_path, "s3rec", items_file="attrs.json")


def test_s3rec_user_without_items(tmp_path):
    path = _write(tmp_path / "src" / "seq.txt", "1 5 3\n7\n2 3 5\n")
    _data_error([str(path), "line 2", "'7'"], _read, tmp_path, "s3rec")


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_s3rec_empty_file(tmp_path, content):
    path = _write(tmp_path / "src" / "seq.txt", content)
    _data_error([str(path), "empty"], _read, tmp_path, "s3rec")


# ------------------------------------------------------------------------------------------- generic


def test_generic_csv_with_items(tmp_path):
    folder = tmp_path / "src"
    _write(folder / "interactions.csv", "user_id,item_id,timestamp\nu1,a,1.5\nu2,b,2\n u1 ,b,3\n")
    _write(folder / "items.csv", 'item_id,text\na,"Alpha, first"\nb,  Beta  \nc,\n')
    raw = _read(tmp_path, "generic")
    _assert_log(raw.interactions, ["u1", "u2", "u1"], ["a", "b", "b"], [1.5, 2.0, 3.0])
    assert _texts(raw.items) == {"a": "Alpha, first", "b": "Beta", "c": ""}
    assert raw.sources == {"interactions": folder / "interactions.csv", "items": folder / "items.csv"}


def test_generic_without_items_file(tmp_path):
    _write(tmp_path / "src" / "interactions.csv", "user_id,item_id,timestamp\nu1,a,1\n")
    raw = _read(tmp_path, "generic")
    assert raw.items is None
    assert list(raw.sources) == ["interactions"]


def test_generic_custom_columns_and_file_names(tmp_path):
    folder = tmp_path / "src"
    _write(folder / "log.csv", "ts,uid,iid,extra\n30,7,100,x\n10,8,200,y\n")
    _write(folder / "catalog.csv", "iid,desc\n100,first\n200,second\n")
    raw = _read(tmp_path, "generic", interactions_file="log.csv", items_file="catalog.csv",
                user_column="uid", item_column="iid", time_column="ts", text_column="desc")
    _assert_log(raw.interactions, ["7", "8"], ["100", "200"], [30.0, 10.0])
    assert _texts(raw.items) == {"100": "first", "200": "second"}


def test_generic_parquet(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    pd.DataFrame({"user_id": [3, 3, 1], "item_id": [42, 7, 42], "timestamp": [5, 4, 4]}).to_parquet(
        folder / "inter.parquet")
    pd.DataFrame({"item_id": ["42", "7"], "text": ["answer", None]}).to_parquet(folder / "items.parquet")
    raw = _read(tmp_path, "generic", interactions_file="inter.parquet", items_file="items.parquet")
    _assert_log(raw.interactions, ["3", "3", "1"], ["42", "7", "42"], [5.0, 4.0, 4.0])
    assert _texts(raw.items) == {"42": "answer", "7": ""}
    # the path may name the interactions file directly
    direct = _read(tmp_path, "generic", path="src/inter.parquet")
    _assert_log(direct.interactions, ["3", "3", "1"], ["42", "7", "42"], [5.0, 4.0, 4.0])


def test_generic_parquet_datetime_timestamps_keep_order(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    times = pd.to_datetime(["2021-03-01 00:00:00", "2020-01-01 00:00:01", "2020-01-01 00:00:00"])
    pd.DataFrame({"user_id": ["a", "a", "a"], "item_id": ["x", "y", "z"], "timestamp": times}).to_parquet(
        folder / "interactions.parquet")
    frame = _read(tmp_path, "generic", interactions_file="interactions.parquet").interactions
    ts = frame["timestamp"].to_numpy()
    assert ts[2] < ts[1] < ts[0]
    # the numbers are proportional to time: one second out of the span between the first and last time
    span = (times[0] - times[2]).total_seconds()
    assert (ts[1] - ts[2]) / (ts[0] - ts[2]) == pytest.approx(1.0 / span)


def test_generic_parquet_missing_datetime_is_an_error(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    times = pd.to_datetime(["2020-01-01", None, "2020-01-02"])
    pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["x", "y", "z"], "timestamp": times}).to_parquet(
        folder / "interactions.parquet")
    _data_error([str(folder / "interactions.parquet"), "'timestamp'", "line 2"],
                _read, tmp_path, "generic", interactions_file="interactions.parquet")


def test_generic_missing_column(tmp_path):
    path = _write(tmp_path / "src" / "interactions.csv", "user_id,item_id,time\nu1,a,1\n")
    message = _data_error([str(path), "'timestamp'"], _read, tmp_path, "generic")
    assert "missing" in message


def test_generic_items_missing_text_column(tmp_path):
    folder = tmp_path / "src"
    _write(folder / "interactions.csv", "user_id,item_id,timestamp\nu1,a,1\n")
    path = _write(folder / "items.csv", "item_id,title\na,x\n")
    _data_error([str(path), "'text'"], _read, tmp_path, "generic")


def test_generic_empty_file(tmp_path):
    path = _write(tmp_path / "src" / "interactions.csv", "")
    assert path.stat().st_size == 0
    _data_error([str(path), "empty"], _read, tmp_path, "generic")


def test_generic_header_only(tmp_path):
    path = _write(tmp_path / "src" / "interactions.csv", "user_id,item_id,timestamp\n")
    _data_error([str(path), "no interactions"], _read, tmp_path, "generic")


def test_generic_non_numeric_timestamp(tmp_path):
    path = _write(tmp_path / "src" / "interactions.csv",
                  "user_id,item_id,timestamp\nu1,a,1\nu1,b,2020-01-02\nu2,a,\nu2,b,3\n")
    message = _data_error([str(path), "column 'timestamp'", "line 3", "'2020-01-02'"], _read, tmp_path, "generic")
    assert "2 bad values" in message


def test_generic_empty_id(tmp_path):
    path = _write(tmp_path / "src" / "interactions.csv", "user_id,item_id,timestamp\nu1,a,1\nu1, ,2\n")
    _data_error([str(path), "'item_id'", "line 3", "empty id"], _read, tmp_path, "generic")


def test_generic_duplicate_item_in_items_file(tmp_path):
    folder = tmp_path / "src"
    _write(folder / "interactions.csv", "user_id,item_id,timestamp\nu1,a,1\n")
    path = _write(folder / "items.csv", "item_id,text\na,x\nb,y\na,z\n")
    _data_error([str(path), "'a'", "line 4"], _read, tmp_path, "generic")


def test_generic_named_items_file_missing(tmp_path):
    _write(tmp_path / "src" / "interactions.csv", "user_id,item_id,timestamp\nu1,a,1\n")
    _data_error([str(tmp_path / "src" / "nope.csv"), "not found"], _read, tmp_path, "generic", items_file="nope.csv")


def test_generic_corrupt_parquet(tmp_path):
    path = _write(tmp_path / "src" / "interactions.parquet", "this is not parquet")
    _data_error([str(path), "Parquet"], _read, tmp_path, "generic", interactions_file="interactions.parquet")


def test_items_file_matching_no_interaction_is_refused(tmp_path):
    folder = tmp_path / "src"
    interactions = _write(folder / "interactions.csv", "user_id,item_id,timestamp\nu1,1,1\nu1,2,2\n")
    items = _write(folder / "items.csv", "item_id,text\nB000X,first\nB000Y,second\n")
    _data_error([str(items), str(interactions), "none of its 2 item ids"], _read, tmp_path, "generic")
    _write(folder / "items.csv", "item_id,text\nB000X,first\n2,second\n")  # one match is enough
    assert _texts(_read(tmp_path, "generic").items)["2"] == "second"


def test_movielens_movies_file_matching_no_rating_is_refused(tmp_path):
    folder = tmp_path / "src"
    ratings = _write(folder / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.0,100\n")
    movies = _write(folder / "movies.csv", "movieId,title,genres\n99,Nope (1999),Drama\n")
    _data_error([str(movies), str(ratings)], _read, tmp_path, "movielens")


@pytest.mark.parametrize("header, column", [("user_id,item_id,timestamp,item_id", "item_id"),
                                            ("user_id,timestamp,item_id,timestamp", "timestamp")])
def test_duplicated_header_column_is_refused(tmp_path, header, column):
    path = _write(tmp_path / "src" / "interactions.csv", f"{header}\nu1,a,1,b\n")
    _data_error([str(path), f"column {column!r} appears twice"], _read, tmp_path, "generic")


def test_duplicated_items_header_column_is_refused(tmp_path):
    folder = tmp_path / "src"
    _write(folder / "interactions.csv", "user_id,item_id,timestamp\nu1,a,1\n")
    path = _write(folder / "items.csv", "item_id,text,text\na,x,y\n")
    _data_error([str(path), "column 'text' appears twice"], _read, tmp_path, "generic")


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", "nan", "NaN"])
def test_non_finite_timestamp_is_refused(tmp_path, value):
    path = _write(tmp_path / "src" / "interactions.csv", f"user_id,item_id,timestamp\nu1,a,1\nu1,b,{value}\n")
    _data_error([str(path), "column 'timestamp'", "line 3", repr(value), "not a finite number"],
                _read, tmp_path, "generic")


def test_non_finite_parquet_timestamp_is_refused(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    pd.DataFrame({"user_id": ["a", "a"], "item_id": ["x", "y"], "timestamp": [1.0, np.inf]}).to_parquet(
        folder / "interactions.parquet")
    _data_error([str(folder / "interactions.parquet"), "'timestamp'", "line 2", "not a finite number"],
                _read, tmp_path, "generic", interactions_file="interactions.parquet")


def test_parquet_float_ids_become_integers_when_whole(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    # an integer column with a gap is stored as float64: 13 becomes 13.0
    pd.DataFrame({"user_id": [1.0, 1.0, 2.0], "item_id": [13.0, 7.0, 13.0], "timestamp": [1, 2, 3]}).to_parquet(
        folder / "inter.parquet")
    pd.DataFrame({"item_id": [13.0, 7.0], "text": ["thirteen", "seven"]}).to_parquet(folder / "items.parquet")
    raw = _read(tmp_path, "generic", interactions_file="inter.parquet", items_file="items.parquet")
    _assert_log(raw.interactions, ["1", "1", "2"], ["13", "7", "13"], [1.0, 2.0, 3.0])
    assert _texts(raw.items) == {"13": "thirteen", "7": "seven"}


@pytest.mark.parametrize("bad, what", [(13.5, "13.5"), (float("nan"), "empty id"), (float("inf"), "inf")])
def test_parquet_float_ids_that_are_not_whole_are_refused(tmp_path, bad, what):
    folder = tmp_path / "src"
    folder.mkdir()
    pd.DataFrame({"user_id": ["a", "a"], "item_id": [1.0, bad], "timestamp": [1, 2]}).to_parquet(
        folder / "inter.parquet")
    _data_error([str(folder / "inter.parquet"), "'item_id'", "line 2", what],
                _read, tmp_path, "generic", interactions_file="inter.parquet")


@pytest.mark.parametrize("fmt", ["movielens", "s3rec", "generic"])
def test_missing_data_source(tmp_path, fmt):
    message = _data_error([str(tmp_path / "nowhere"), "does not exist"], _read, tmp_path, fmt, path="nowhere")
    assert "data.path='nowhere'" in message
