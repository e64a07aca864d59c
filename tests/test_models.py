"""Every student honours the shared contract: shapes, padding, learning, save/load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rdistill.data.schema import PADDING_IDX
from rdistill.models import STUDENTS, build_student, load_student, save_student

N_ITEMS, MAX_LEN = 30, 10
SMALL_PARAMS = {"hidden_size": 16, "dropout": 0.0}


# slm is cut from a teacher; standing alone it needs the backbone config the teacher would give it
TINY_BERT = {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 32, "max_position_embeddings": 64, "vocab_size": 10}
EXTRA = {"slm": {"backbone_config": TINY_BERT, "num_layers": 1, "feature_blocks": 1, "teacher_layers": 2}}


def make(name: str, **params) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_student(name, N_ITEMS, MAX_LEN, {**SMALL_PARAMS, **EXTRA.get(name, {}), **params})


def histories() -> torch.Tensor:
    return torch.tensor([[0, 0, 0, 0, 0, 0, 0, 3, 4, 5], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [0] * 9 + [7]])


def test_registry_names_every_student():
    assert sorted(STUDENTS) == ["caser", "gru4rec", "sasrec", "slm"]
    with pytest.raises(KeyError, match="unknown student 'bert4rec'"):
        build_student("bert4rec", N_ITEMS, MAX_LEN, {})


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_shapes_and_padding_column(name):
    model = make(name).eval()
    history = histories()
    assert model(history).shape == (3, 16)
    scores = model.scores(history)
    assert scores.shape == (3, N_ITEMS + 1)
    assert torch.isneginf(scores[:, PADDING_IDX]).all()
    assert torch.isfinite(scores[:, 1:]).all()
    assert model.item_embeddings().shape == (N_ITEMS + 1, 16)


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_padding_embedding_is_zero_and_gets_no_gradient(name):
    model = make(name)
    model.loss(histories(), torch.tensor([6, 11, 8])).backward()
    assert torch.count_nonzero(model.item_embeddings()[PADDING_IDX]) == 0
    assert torch.count_nonzero(model.item_embedding.weight.grad[PADDING_IDX]) == 0


@pytest.mark.parametrize("name", ["sasrec", "caser"])
def test_extra_left_padding_does_not_change_the_user_state(name):
    # SASRec masks padding keys and counts positions from the most recent item; Caser reads only its window.
    model = make(name).eval()
    short = torch.tensor([[0, 0, 4, 5, 6]])
    long = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 4, 5, 6]])
    torch.testing.assert_close(model(short), model(long))


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_causal_state_ignores_the_future(name):
    model = make(name).eval()
    history = histories()[1:2]
    changed = history.clone()
    changed[0, -1] = 20
    states, changed_states = model.sequence_states(history), model.sequence_states(changed)
    torch.testing.assert_close(states[:, :-1], changed_states[:, :-1])
    assert not torch.allclose(states[:, -1], changed_states[:, -1])


def test_all_positions_loss_is_the_mean_cross_entropy_over_real_positions():
    model = make("sasrec").eval()
    history = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 3, 4, 5]])
    target = torch.tensor([6])
    states = model.sequence_states(history)[0, -3:]  # the three real positions predict 4, 5 and the target 6
    logits = states @ model.item_embeddings().T
    logits[:, PADDING_IDX] = float("-inf")
    expected = F.cross_entropy(logits, torch.tensor([4, 5, 6]))
    torch.testing.assert_close(model.all_positions_loss(history, target), expected)


def test_non_causal_student_has_no_sequence_states():
    with pytest.raises(NotImplementedError, match="caser is not a causal student"):
        make("caser").sequence_states(histories())


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_loss_falls_on_a_tiny_next_item_problem(name):
    # next item = last item + 1: learnable from the history alone
    torch.manual_seed(0)
    model = make(name)
    history = torch.zeros(64, MAX_LEN, dtype=torch.long)
    starts = torch.randint(1, N_ITEMS - MAX_LEN - 1, (64,))
    for row, start in enumerate(starts):
        history[row, -4:] = torch.arange(start, start + 4)
    target = history[:, -1] + 1
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    first = model.loss(history, target).item()
    for _ in range(60):
        optimizer.zero_grad()
        loss = model.loss(history, target)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first, (first, loss.item())


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_save_then_load_gives_identical_scores(name, tmp_path):
    model = make(name).eval()
    save_student(model, tmp_path / name)
    loaded = load_student(tmp_path / name)
    assert loaded.model_config() == model.model_config()
    torch.testing.assert_close(loaded.scores(histories()), model.scores(histories()), rtol=0, atol=0)


def test_sasrec_rejects_heads_that_do_not_divide_the_width():
    with pytest.raises(ValueError, match="not divisible by num_heads 3"):
        make("sasrec", num_heads=3)


@pytest.mark.parametrize("params", [{}, {"num_layers": 1}, {"num_layers": 3, "num_heads": 4}])
def test_sasrec_inference_path_gives_the_training_path_state(params):
    """In eval mode SASRec computes only the last position in its final block (last_state); it must give the
    state that the full encoder gives at that position, for batches with padding and for single histories."""
    model = make("sasrec", **params).eval()
    batch = torch.cat([histories(), torch.zeros(1, MAX_LEN, dtype=torch.long)])  # ... and an all-padding row
    with torch.no_grad():
        torch.testing.assert_close(model(batch), model.sequence_states(batch)[:, -1], atol=1e-5, rtol=1e-5)
        for row in histories():
            single = row[None]
            torch.testing.assert_close(model(single), model.sequence_states(single)[:, -1], atol=1e-5, rtol=1e-5)
    model.train()  # training keeps the full encoder (dropout, every position)
    assert model(histories()).requires_grad
