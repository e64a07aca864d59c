"""A tiny synthetic dataset with a learnable sequential pattern, and a config for it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rdistill.config import Config, load_config

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

