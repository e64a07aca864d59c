"""The language-model teacher on a tiny random BERT (real transformers code, MiniLM's real tokenizer)."""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch

from rdistill.config import TeacherParams
from rdistill.data.schema import ITEMS_SCHEMA
from rdistill.errors import ConfigError
from rdistill.models.lm_teacher import (
    build_teacher,
    load_teacher,
    resolve_backbone_path,
    save_teacher,
)

N_ITEMS, MAX_LEN = 12, 6


def items_table(n_items: int = N_ITEMS) -> pa.Table:
    texts = [f"product {i} in category {i % 3}" if i % 4 else "" for i in range(1, n_items + 1)]
    return pa.Table.from_pydict({"item_idx": list(range(1, n_items + 1)),
                                 "item_id": [f"i{i}" for i in range(1, n_items + 1)], "text": texts},
                                schema=ITEMS_SCHEMA)


def histories() -> torch.Tensor:
    return torch.tensor([[0, 0, 0, 1, 2, 3], [4, 5, 6, 7, 8, 9], [0, 0, 0, 0, 0, 11]])


@pytest.mark.parametrize("mode", ["items", "text"])
def test_scores_cover_the_catalogue_with_padding_masked(tiny_backbone, mode):
    teacher, _ = build_teacher(TeacherParams(model=tiny_backbone, mode=mode, prompt_max_tokens=24), items_table(),
                               MAX_LEN)
    teacher.eval()
    scores = teacher.scores(histories())
    assert scores.shape == (3, N_ITEMS + 1)
    assert torch.isneginf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
    # the item table starts as the backbone's encoding of the item texts (ID part initialised to zero)
    torch.testing.assert_close(teacher.item_embeddings(), teacher.item_text_vectors)
    assert torch.count_nonzero(teacher.item_text_vectors[0]) == 0


def test_text_prompt_keeps_the_most_recent_items_within_budget(tiny_backbone):
    teacher, tokenizer = build_teacher(TeacherParams(model=tiny_backbone, mode="text", prompt_max_tokens=16),
                                       items_table(), MAX_LEN)
    inputs = teacher.backbone_inputs(torch.tensor([[4, 5, 6, 7, 8, 9]]))
    ids = inputs["input_ids"][0][inputs["attention_mask"][0].bool()].tolist()
    assert len(ids) <= 16
    text = tokenizer.decode(ids)
    assert text.startswith("[CLS]") and text.rstrip().endswith("[SEP]")
    assert "product 9" in text and "product 4" not in text  # oldest items dropped first


def test_loss_falls_when_fine_tuned(tiny_backbone):
    torch.manual_seed(0)
    teacher, _ = build_teacher(TeacherParams(model=tiny_backbone, dropout=0.0), items_table(), MAX_LEN)
    history = torch.tensor([[0, 0, 0, 0, i, i + 1] for i in range(1, 10)])
    target = history[:, -1] + 1
    optimizer = torch.optim.Adam(teacher.parameters(), lr=3e-3)
    first = teacher.loss(history, target).item()
    for _ in range(40):
        optimizer.zero_grad()
        loss = teacher.loss(history, target)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.3 * first


@pytest.mark.parametrize("mode", ["items", "text"])
def test_save_then_load_scores_identically(tiny_backbone, tmp_path, mode):
    torch.manual_seed(0)
    teacher, tokenizer = build_teacher(TeacherParams(model=tiny_backbone, mode=mode), items_table(), MAX_LEN)
    with torch.no_grad():  # make the ID part non-trivial so the round trip is tested on it too
        teacher.item_id_embedding.weight[1:].normal_(std=0.1)
    teacher.eval()
    save_teacher(teacher, tokenizer, tmp_path / "teacher")
    loaded, _ = load_teacher(tmp_path / "teacher")
    torch.testing.assert_close(loaded.scores(histories()), teacher.scores(histories()), rtol=0, atol=0)


def test_minilm_default_backbone_loads_offline():
    teacher, _ = build_teacher(TeacherParams(), items_table(4), MAX_LEN)
    assert teacher.backbone.config.hidden_size == 384
    # different texts give different item vectors
    vectors = teacher.item_text_vectors[1:]
    assert torch.linalg.matrix_rank(vectors) == 4


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="is not a Hugging Face checkpoint folder"):
        resolve_backbone_path(str(tmp_path))


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_left_padding_does_not_change_a_users_scores(tiny_backbone, pooling):
    # alone, the short history's all-padding columns are dropped; batched with a full one they are kept and masked
    teacher, _ = build_teacher(TeacherParams(model=tiny_backbone, pooling=pooling), items_table(), MAX_LEN)
    teacher.eval()
    short = torch.tensor([[0, 0, 0, 1, 2, 3]])
    batched = torch.cat([short, torch.tensor([[4, 5, 6, 7, 8, 9]])])
    torch.testing.assert_close(teacher.scores(short)[0], teacher.scores(batched)[0], rtol=1e-5, atol=1e-5)


def test_causal_attention_bias_blocks_the_future_and_padding():
    from rdistill.models.lm_teacher import causal_attention_bias

    bias = causal_attention_bias(torch.tensor([[0, 1, 1]]), torch.float32)
    blocked = torch.finfo(torch.float32).min
    # row i: which positions position i may read (0) -- padding only itself, real items themselves and earlier
    # real items, never later ones
    expected = torch.tensor([[0.0, blocked, blocked],
                             [blocked, 0.0, blocked],
                             [blocked, 0.0, 0.0]])
    assert bias.shape == (1, 1, 3, 3)
    torch.testing.assert_close(bias[0, 0], expected)


def test_a_causal_teacher_never_reads_later_items(tiny_backbone):
    teacher, _ = build_teacher(TeacherParams(model=tiny_backbone, causal=True), items_table(), MAX_LEN)
    teacher.eval()
    history = torch.tensor([[0, 0, 1, 2, 3, 4]])
    changed = torch.tensor([[0, 0, 1, 2, 9, 10]])  # the same first two items, different later ones
    states, _ = teacher.hidden_states(history)
    changed_states, _ = teacher.hidden_states(changed)
    torch.testing.assert_close(states.last_hidden_state[0, :2], changed_states.last_hidden_state[0, :2])
    assert not torch.allclose(states.last_hidden_state[0, 2:], changed_states.last_hidden_state[0, 2:])

    bidirectional, _ = build_teacher(TeacherParams(model=tiny_backbone), items_table(), MAX_LEN)
    bidirectional.load_state_dict(teacher.state_dict())
    bidirectional.eval()
    plain, _ = bidirectional.hidden_states(history)
    plain_changed, _ = bidirectional.hidden_states(changed)
    assert not torch.allclose(plain.last_hidden_state[0, :2], plain_changed.last_hidden_state[0, :2])


def test_all_positions_loss_is_the_mean_of_every_prefix_loss(tiny_backbone):
    """One pass over [a, b, c] with target d equals the last-position losses of the prefixes [a]->b, [a, b]->c
    and [a, b, c]->d, averaged (position ids count real items, so a prefix alone reads exactly the same)."""
    torch.manual_seed(0)
    teacher, _ = build_teacher(TeacherParams(model=tiny_backbone, causal=True, dropout=0.0), items_table(), MAX_LEN)
    teacher.eval()
    history, target = torch.tensor([[0, 0, 0, 5, 7, 2]]), torch.tensor([9])
    prefixes = torch.tensor([[0, 0, 0, 0, 0, 5], [0, 0, 0, 0, 5, 7], [0, 0, 0, 5, 7, 2]])
    by_prefix = torch.nn.functional.cross_entropy(teacher.scores(prefixes), torch.tensor([7, 2, 9]))
    torch.testing.assert_close(teacher(history, target, all_positions=True), by_prefix, rtol=1e-5, atol=1e-6)
    # and batched with a longer history, each row still counts only its real positions
    batch = torch.cat([history, torch.tensor([[1, 2, 3, 4, 5, 6]])])
    loss = teacher.all_positions_loss(batch, torch.tensor([9, 7]))
    longer = torch.tensor([[0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 2], [0, 0, 0, 1, 2, 3], [0, 0, 1, 2, 3, 4],
                           [0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6]])
    every = torch.nn.functional.cross_entropy(torch.cat([teacher.scores(prefixes), teacher.scores(longer)]),
                                              torch.tensor([7, 2, 9, 2, 3, 4, 5, 6, 7]))
    torch.testing.assert_close(loss, every, rtol=1e-5, atol=1e-6)


def test_all_positions_needs_a_causal_teacher(tiny_backbone):
    teacher, _ = build_teacher(TeacherParams(model=tiny_backbone), items_table(), MAX_LEN)
    with pytest.raises(ConfigError, match="causal"):
        teacher.all_positions_loss(histories(), torch.tensor([1, 2, 3]))
    with pytest.raises(ConfigError, match="causal=true needs teacher.mode=items"):
        build_teacher(TeacherParams(model=tiny_backbone, causal=True, mode="text"), items_table(), MAX_LEN)


def test_a_causal_teacher_saves_and_loads_causal(tiny_backbone, tmp_path):
    teacher, tokenizer = build_teacher(TeacherParams(model=tiny_backbone, causal=True), items_table(), MAX_LEN)
    teacher.eval()
    save_teacher(teacher, tokenizer, tmp_path / "teacher")
    loaded, _ = load_teacher(tmp_path / "teacher")
    assert loaded.causal_mask
    torch.testing.assert_close(loaded.scores(histories()), teacher.scores(histories()))
