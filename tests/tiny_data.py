"""A tiny synthetic dataset with a learnable sequential pattern, and a config for it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rdistill.config import Config, load_config
from rdistill.teacher.signals import ITEM_EMB_SCHEMA, TOPK_SCHEMA, list_column

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RDISTILL_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))

N_ITEMS = 40
N_USERS = 120


def write_cyclic_log(folder: Path, n_users: int = N_USERS, n_items: int = N_ITEMS, seed: int = 0) -> Path:
    """Users walk the catalogue in steps of +1 from a random start: the next item is always predictable from the
    last one, while popularity is nearly flat, so a sequential model must beat popularity by far."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id,item_id,timestamp"]
    for user in range(n_users):
        start, length = rng.integers(0, n_items), rng.integers(6, 14)
        for step in range(length):
            lines.append(f"u{user},i{(start + step) % n_items},{1000 + step}")
    path = folder / "interactions.csv"
    path.write_text("\n".join(lines) + "\n")
    (folder / "items.csv").write_text(
        "item_id,text\n" + "\n".join(f"i{i},item number {i}" for i in range(n_items)) + "\n"
    )
    return path


def tiny_config(root: Path, *overrides: str) -> Config:
    return load_config(
        None,
        [
            f"artifact_root={root / 'artifacts'}",
            "data.format=generic",
            f"data.root={root}",
            "data.path=raw",
            "data.min_user_interactions=3",
            "data.min_item_interactions=1",
            "data.max_len=8",
            "train.progress=false",
            "train.batch_size=32",
            "train.num_threads=1",
            "student.params={hidden_size: 16, dropout: 0.0}",
            *overrides,
        ],
    )


def write_signals(root, topk_items: np.ndarray, topk_scores: np.ndarray, item_emb: np.ndarray,
                  rows: int | None = None, items: int | None = None) -> None:
    """A signals/ folder as `rdistill teacher-infer` writes it, from given arrays (the teacher is a fixture)."""
    folder = root / "signals"
    folder.mkdir(parents=True, exist_ok=True)
    count = len(topk_items)
    pq.write_table(pa.Table.from_pydict({
        "row_id": pa.array(np.arange(count, dtype=np.int64)),
        "topk_items": list_column(topk_items.astype(np.int32), pa.int32()),
        "topk_scores": list_column(topk_scores.astype(np.float32), pa.float32()),
        "user_emb": list_column(np.zeros((count, item_emb.shape[1]), np.float32), pa.float32()),
    }, schema=TOPK_SCHEMA), folder / "topk.parquet")
    pq.write_table(pa.Table.from_pydict({
        "item_idx": pa.array(np.arange(1, len(item_emb), dtype=np.int32)),
        "embedding": list_column(item_emb[1:].astype(np.float32), pa.float32()),
    }, schema=ITEM_EMB_SCHEMA), folder / "item_emb.parquet")
    (folder / "manifest.json").write_text(json.dumps({"counts": {"rows": {"train": rows or count},
                                                                 "items": items or len(item_emb) - 1}}))


def dataset_with_signals(tiny_root: Path, root: Path) -> Path:
    """The tiny dataset copied to `root`, with fixture signals beside it: the teacher's favourite is the true next
    item, then the three after it."""
    import shutil

    from rdistill.data.dataset import load_split

    shutil.copytree(tiny_root / "artifacts" / "dataset", root / "dataset")
    target = load_split(root / "dataset", "train", 8).target.numpy()
    topk = np.stack([(target - 1 + offset) % N_ITEMS + 1 for offset in (0, 1, 2, 3)], axis=1)
    scores = np.tile(np.array([[5.0, 1.0, 0.0, -1.0]], np.float32), (len(target), 1))
    item_emb = np.random.default_rng(0).normal(size=(N_ITEMS + 1, 12)).astype(np.float32)
    item_emb[0] = 0
    write_signals(root, topk, scores, item_emb)
    return root
