"""Session fixtures shared by the test modules (helpers live in tiny_data.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiny_data import tiny_config, write_cyclic_log
from rdistill.data.prepare import prepare_dataset


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A prepared tiny dataset under <root>/artifacts; tests write their runs under their own names."""
    root = tmp_path_factory.mktemp("tiny")
    write_cyclic_log(root / "raw")
    prepare_dataset(tiny_config(root))
    return root
