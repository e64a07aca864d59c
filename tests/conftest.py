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


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray (2 CPUs on 127.0.0.1) for every test that needs it; started on first use."""
    import os

    from rdistill.ray_runtime import set_env_defaults

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    set_env_defaults()  # the environment ensure_ray gives a cluster it starts (Serve's proxy timeout and switches)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, address="local")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> str:
    """A 2-layer, 32-wide random BERT saved as a local checkpoint, with the MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rdistill.models.lm_teacher import resolve_backbone_path

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_backbone_path("minilm")), local_files_only=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
