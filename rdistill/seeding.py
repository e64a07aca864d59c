"""Seeding: one call makes a run repeatable (Python, NumPy and torch's global generators, plus a torch.Generator
of its own for the run's shuffling and negative sampling)."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
