"""Readers: raw interaction logs in several formats -> one canonical interaction log.

The canonical log is a DataFrame with user_id (str), item_id (str), timestamp (float64) and row_order (int64:
the position in the source file, the deterministic tie-break for equal timestamps), plus an optional item table
(item_id, text). Every reader raises DataError naming the file, column and line of the first bad value: a
duplicated header column, an empty id, a timestamp that is not a finite number, an id stored as a fractional
float; and read_log refuses an item table none of whose ids occurs in the interactions.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rdistill.config import DataConfig
from rdistill.errors import DataError

LOG_COLUMNS = ["user_id", "item_id", "timestamp", "row_order"]
MAX_TAGS_PER_ITEM = 5


@dataclass
class RawLog:
    interactions: pd.DataFrame  # LOG_COLUMNS
    items: pd.DataFrame | None  # item_id, text; None when the source has no item side information
    sources: dict[str, Path] = field(default_factory=dict)  # role -> file read, hashed into the manifest


def read_log(config: DataConfig) -> RawLog:
    """Read the configured source in its format."""
    path = config.resolve_path()
    if not path.exists():
        raise DataError(f"data source {path} does not exist (data.root={config.root!r}, data.path={config.path!r})")
    readers = {"movielens": read_movielens, "s3rec": read_s3rec, "generic": read_generic}
    raw = readers[config.format](path, config)
    _check_items_match(raw)
    return raw


INTERACTION_ROLES = ("interactions", "ratings", "sequences")  # RawLog.sources roles of the interactions file
ITEM_ROLES = ("items", "movies", "attributes")  # ... and of the item table's file


def _check_items_match(raw: RawLog) -> None:
    """An item table none of whose ids occurs in the interactions is a wrong file or a wrong id column (e.g. ASINs
    against integer ids): every item would silently get an empty text."""
    if raw.items is None or raw.items.empty:
        return
    table_ids = set(raw.items["item_id"])
    if not table_ids.isdisjoint(raw.interactions["item_id"]):
        return
    log_file = next((raw.sources[r] for r in INTERACTION_ROLES if r in raw.sources), "the interactions")
    items_file = next((raw.sources[r] for r in ITEM_ROLES if r in raw.sources), "the item table")
    raise DataError(
        f"{items_file}: none of its {len(table_ids)} item ids occurs in {log_file} (there e.g. "
        f"{raw.interactions['item_id'].iloc[0]!r}, here e.g. {raw.items['item_id'].iloc[0]!r}): is it the item "
        "table of this dataset, and is data.item_column the same id in both files?")


# ----------------------------------------------------------------------------------------------- helpers


def _read_table_file(path: Path, *, sep: str = ",", header: bool = True, names: list[str] | None = None,
                     encoding: str = "utf-8") -> pd.DataFrame:
    """Read a CSV-like or Parquet file with every column as a string, or raise DataError naming the file."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as err:  # pyarrow raises several types for corrupt files
            raise DataError(f"{path}: not a readable Parquet file ({err})") from None
        _refuse_duplicate_columns([str(c) for c in frame.columns], path)
        return frame
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    options = {"sep": sep, "dtype": str, "keep_default_na": False, "encoding": encoding,
               "engine": "python" if len(sep) > 1 else "c"}
    try:
        if header:  # pandas renames a repeated column to "name.1": read the header as written to catch it
            _refuse_duplicate_columns(pd.read_csv(path, header=None, nrows=1, **options).iloc[0].tolist(), path)
        return pd.read_csv(path, header=0 if header else None, names=names, **options)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{path}: cannot be parsed ({err})") from None


def _refuse_duplicate_columns(columns: list[str], path: Path) -> None:
    seen: set[str] = set()
    for column in columns:
        name = str(column).strip()
        if name in seen:
            raise DataError(f"{path}: column {name!r} appears twice in the header (found columns {columns})")
        seen.add(name)


def _require_columns(frame: pd.DataFrame, path: Path, columns: list[str]) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise DataError(f"{path}: column {missing[0]!r} missing (found columns {list(frame.columns)})")


def _line_number(position: int, header: bool) -> int:
    return position + (2 if header else 1)


def _numeric_column(frame: pd.DataFrame, column: str, path: Path, header: bool) -> np.ndarray:
    values = frame[column]
    if pd.api.types.is_numeric_dtype(values):
        numbers = values.astype("float64")
    elif pd.api.types.is_datetime64_any_dtype(values):
        # NaT would otherwise become the int64 minimum and sort first: report it as a bad value instead
        numbers = values.astype("int64").astype("float64").where(values.notna())
    else:
        numbers = pd.to_numeric(values.astype(str).str.strip(), errors="coerce")
    numbers = numbers.to_numpy(dtype="float64")
    bad = np.flatnonzero(~np.isfinite(numbers))  # NaN (not a number, or missing) and +-inf alike
    if len(bad):
        first = int(bad[0])
        raise DataError(
            f"{path}: column {column!r} line {_line_number(first, header)}: {values.iloc[first]!r} is not a "
            "finite number" + (f" ({len(bad)} bad values in all)" if len(bad) > 1 else "")
        )
    return numbers


def _id_column(frame: pd.DataFrame, column: str, path: Path, header: bool) -> np.ndarray:
    if pd.api.types.is_float_dtype(frame[column]):
        return _float_id_column(frame[column], column, path, header)
    ids = frame[column].astype(str).str.strip()
    empty = np.flatnonzero((ids == "").to_numpy() | frame[column].isna().to_numpy())
    if len(empty):
        raise DataError(f"{path}: column {column!r} line {_line_number(int(empty[0]), header)}: empty id")
    return ids.to_numpy(dtype=object)


def _float_id_column(values: pd.Series, column: str, path: Path, header: bool) -> np.ndarray:
    """Ids stored as floats (Parquet written from a frame whose integer column held a missing value): 13.0 is
    the id "13", as in a file that stores it as an integer; a fraction or a missing value is refused."""
    numbers = values.to_numpy(dtype="float64")
    missing = np.flatnonzero(np.isnan(numbers))
    if len(missing):
        raise DataError(f"{path}: column {column!r} line {_line_number(int(missing[0]), header)}: empty id")
    fractional = np.flatnonzero(~np.isfinite(numbers) | (numbers != np.round(numbers)))
    if len(fractional):
        first = int(fractional[0])
        raise DataError(f"{path}: column {column!r} line {_line_number(first, header)}: id {numbers[first]!r} is a "
                        "floating-point number that is not whole; store ids as strings or integers")
    return np.array([str(int(number)) for number in numbers], dtype=object)


def _canonical_log(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, path: Path) -> pd.DataFrame:
    if len(users) == 0:
        raise DataError(f"{path}: no interactions (the file has a header but no rows)")
    return pd.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "timestamp": timestamps.astype("float64"),
            "row_order": np.arange(len(users), dtype=np.int64),
        }
    )


def _item_table(item_ids: list[str], texts: list[str], path: Path, header: bool) -> pd.DataFrame:
    items = pd.DataFrame({"item_id": item_ids, "text": texts})
    duplicated = np.flatnonzero(items["item_id"].duplicated().to_numpy())
    if len(duplicated):
        first = int(duplicated[0])
        raise DataError(
            f"{path}: item {items['item_id'].iloc[first]!r} at line {_line_number(first, header)} appears twice"
        )
    return items


# --------------------------------------------------------------------------------------------- movielens


def read_movielens(path: Path, config: DataConfig) -> RawLog:
    """MovieLens: latest/20m/25m (ratings.csv + movies.csv [+ tags.csv]), ml-1m (*.dat with ::), ml-100k (u.data)."""
    folder = path if path.is_dir() else path.parent
    ratings_name = config.interactions_file or next(
        (name for name in ("ratings.csv", "ratings.dat", "u.data") if (folder / name).is_file()), None
    )
    if ratings_name is None:
        raise DataError(f"{folder}: no MovieLens ratings file (ratings.csv, ratings.dat or u.data)")
    ratings_path = folder / ratings_name
    sources = {"ratings": ratings_path}
    columns = ["user_id", "item_id", "rating", "timestamp"]
    if ratings_path.suffix == ".csv":
        frame = _read_table_file(ratings_path)
        frame = frame.rename(columns={"userId": "user_id", "movieId": "item_id"})
        header = True
    elif ratings_path.suffix == ".dat":
        frame = _read_table_file(ratings_path, sep="::", header=False, names=columns, encoding="latin-1")
        header = False
    else:  # ml-100k u.data is tab separated
        frame = _read_table_file(ratings_path, sep="\t", header=False, names=columns)
        header = False
    _require_columns(frame, ratings_path, columns)
    timestamps = _numeric_column(frame, "timestamp", ratings_path, header)
    keep = np.ones(len(frame), dtype=bool)
    if config.min_rating is not None:
        keep = _numeric_column(frame, "rating", ratings_path, header) >= config.min_rating
    users = _id_column(frame, "user_id", ratings_path, header)[keep]
    items = _id_column(frame, "item_id", ratings_path, header)[keep]
    log = _canonical_log(users, items, timestamps[keep], ratings_path)

    item_table = None
    movies_name = config.items_file or next(
        (name for name in ("movies.csv", "movies.dat", "u.item") if (folder / name).is_file()), None
    )
    if movies_name is not None:
        movies_path = folder / movies_name
        sources["movies"] = movies_path
        tags = {}
        tags_path = folder / "tags.csv"
        if config.include_tags and tags_path.is_file():
            sources["tags"] = tags_path
            tags = _movielens_top_tags(tags_path)
        item_table = _movielens_items(movies_path, tags)
    return RawLog(log, item_table, sources)


def _movielens_items(path: Path, tags: dict[str, list[str]]) -> pd.DataFrame:
    if path.suffix == ".csv":
        frame = _read_table_file(path)
        frame = frame.rename(columns={"movieId": "item_id"})
        header = True
    elif path.suffix == ".dat":
        frame = _read_table_file(path, sep="::", header=False, names=["item_id", "title", "genres"],
                                 encoding="latin-1")
        header = False
    else:  # ml-100k u.item: id|title|release|video release|url|19 genre flags
        frame = _read_table_file(path, sep="|", header=False, encoding="latin-1")
        genre_names = _ml100k_genres(path.parent / "u.genre")
        flags = frame.iloc[:, 5:5 + len(genre_names)].to_numpy()
        frame = pd.DataFrame(
            {
                "item_id": frame.iloc[:, 0],
                "title": frame.iloc[:, 1],
                "genres": ["|".join(g for g, flag in zip(genre_names, row) if flag == "1") for row in flags],
            }
        )
        header = False
    _require_columns(frame, path, ["item_id", "title", "genres"])
    item_ids = list(_id_column(frame, "item_id", path, header))
    texts = []
    for item_id, title, genres in zip(item_ids, frame["title"], frame["genres"]):
        text = str(title).strip()
        genre_list = [g for g in str(genres).split("|") if g and g != "(no genres listed)"]
        if genre_list:
            text += ". Genres: " + ", ".join(genre_list)
        if item_id in tags:
            text += ". Tags: " + ", ".join(tags[item_id])
        texts.append(text)
    return _item_table(item_ids, texts, path, header)


def _movielens_top_tags(path: Path) -> dict[str, list[str]]:
    frame = _read_table_file(path)
    _require_columns(frame, path, ["movieId", "tag"])
    counts: dict[str, Counter] = defaultdict(Counter)
    for movie, tag in zip(frame["movieId"], frame["tag"]):
        tag = str(tag).strip().lower()
        if tag:
            counts[str(movie).strip()][tag] += 1
    # most frequent first, alphabetical among equals, so the text is deterministic
    return {
        movie: [tag for tag, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_TAGS_PER_ITEM]]
        for movie, c in counts.items()
    }


def _ml100k_genres(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: ml-100k genre list u.genre not found beside u.item")
    return [line.split("|")[0] for line in path.read_text(encoding="latin-1").splitlines() if "|" in line]


# ------------------------------------------------------------------------------------------------- s3rec


def read_s3rec(path: Path, config: DataConfig) -> RawLog:
    """One line per user, ``user item item ...`` in chronological order (SASRec / S3-Rec preprocessing)."""
    sequences_path = path / config.interactions_file if path.is_dir() and config.interactions_file else path
    if sequences_path.is_dir():
        candidates = sorted(sequences_path.glob("*.txt"))
        if len(candidates) != 1:
            raise DataError(f"{sequences_path}: set data.interactions_file to the sequences file "
                            f"(found {[c.name for c in candidates]})")
        sequences_path = candidates[0]
    if not sequences_path.is_file():
        raise DataError(f"{sequences_path}: file not found")
    text = sequences_path.read_text()
    if not text.strip():
        raise DataError(f"{sequences_path}: file is empty")
    users, items, positions = [], [], []
    for line_number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) < 2:
            raise DataError(f"{sequences_path}: line {line_number}: user {tokens[0]!r} has no items")
        user, sequence = tokens[0], tokens[1:]
        users.extend([user] * len(sequence))
        items.extend(sequence)
        positions.extend(range(len(sequence)))
    log = _canonical_log(np.array(users, dtype=object), np.array(items, dtype=object),
                         np.array(positions, dtype=np.float64), sequences_path)
    sources = {"sequences": sequences_path}

    item_table = None
    attributes_name = config.items_file
    if attributes_name is None and path.is_dir():
        found = sorted(path.glob("*item2attributes*.json"))
        attributes_name = found[0].name if found else None
    if attributes_name is not None:
        attributes_path = path / attributes_name if path.is_dir() else path.parent / attributes_name
        sources["attributes"] = attributes_path
        item_table = _s3rec_items(attributes_path, set(items))
    return RawLog(log, item_table, sources)


def _s3rec_items(path: Path, known_items: set[str]) -> pd.DataFrame:
    """Item-attributes JSON {item: [attribute, ...]} -> text 'attributes: a b c' (ID-only data has no titles)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        attributes = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(attributes, dict):
        raise DataError(f"{path}: expected an object mapping item id to a list of attributes")
    item_ids, texts = [], []
    for position, (item_id, values) in enumerate(attributes.items(), start=1):
        item_id = str(item_id)
        if item_id not in known_items:
            raise DataError(f"{path}: key {item_id!r} (entry {position}) is an item that no sequence contains")
        if not isinstance(values, list):
            raise DataError(f"{path}: key {item_id!r} (entry {position}): attributes must be a list")
        item_ids.append(item_id)
        texts.append("attributes: " + " ".join(str(v) for v in values) if values else "")
    return pd.DataFrame({"item_id": item_ids, "text": texts})


# ----------------------------------------------------------------------------------------------- generic


def read_generic(path: Path, config: DataConfig) -> RawLog:
    """Interactions CSV/Parquet with user, item and numeric timestamp columns, plus an optional items file."""
    interactions_path = path / (config.interactions_file or "interactions.csv") if path.is_dir() else path
    frame = _read_table_file(interactions_path)
    header = interactions_path.suffix != ".parquet"
    columns = [config.user_column, config.item_column, config.time_column]
    _require_columns(frame, interactions_path, columns)
    log = _canonical_log(
        _id_column(frame, config.user_column, interactions_path, header),
        _id_column(frame, config.item_column, interactions_path, header),
        _numeric_column(frame, config.time_column, interactions_path, header),
        interactions_path,
    )
    sources = {"interactions": interactions_path}

    item_table = None
    folder = path if path.is_dir() else path.parent
    items_name = config.items_file or ("items.csv" if (folder / "items.csv").is_file() else None)
    if items_name is not None:
        items_path = folder / items_name
        items = _read_table_file(items_path)
        items_header = items_path.suffix != ".parquet"
        _require_columns(items, items_path, [config.item_column, config.text_column])
        item_ids = list(_id_column(items, config.item_column, items_path, items_header))
        texts = [("" if pd.isna(t) else str(t)).strip() for t in items[config.text_column]]
        item_table = _item_table(item_ids, texts, items_path, items_header)
        sources["items"] = items_path
    return RawLog(log, item_table, sources)
