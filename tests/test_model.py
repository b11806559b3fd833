"""Model: the seed's exact network at the defaults, every cell's shapes, and config validation."""

import re

import pytest
import torch
from torch import nn

from tune_adder.model import CELLS, AdderRNN, ModelConfig


class SeedModel(nn.Module):
    """The report's myPTRNNModel, copied from the seed (section 3) as an independent reference."""

    def __init__(self):
        super().__init__()
        self.embed_layer = nn.Embedding(10, 32)
        self.rnn = nn.RNN(64, 64, 2, batch_first=True)
        self.dense = nn.Linear(64, 10)


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_defaults_are_the_seed_network():
    model = AdderRNN(ModelConfig())
    assert _n_params(model) == _n_params(SeedModel()) == 17_610
    assert [p.shape for p in model.parameters()] == [p.shape for p in SeedModel().parameters()]
    assert isinstance(model.rnn, nn.RNN) and model.rnn.nonlinearity == "tanh" and model.rnn.batch_first
    assert (model.embed.num_embeddings, model.embed.embedding_dim) == (10, 32)
    assert (model.rnn.input_size, model.rnn.hidden_size, model.rnn.num_layers) == (64, 64, 2)


@pytest.mark.parametrize("cell", CELLS)
def test_logits_have_one_row_per_position_and_digit(cell):
    cfg = ModelConfig(base=16, embed_dim=8, hidden=12, layers=3, cell=cell)
    model = AdderRNN(cfg)
    assert isinstance(model.rnn, getattr(nn, cell))
    a = torch.randint(0, 16, (5, 9))
    assert model(a, a.flip(1)).shape == (5, 9, 16)
    # per layer: gates x hidden x (inputs + hidden + 2 biases); layer 1 reads 2*8 inputs, the others 12
    gates = {"RNN": 1, "LSTM": 4, "GRU": 3}[cell]
    assert _n_params(model.rnn) == gates * 12 * ((16 + 12 + 2) + 2 * (12 + 12 + 2))


def test_model_reads_any_length():
    model = AdderRNN(ModelConfig())
    a = torch.randint(0, 10, (2, 201))
    assert model(a, a).shape == (2, 201, 10)


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("base", 1, "2..16"),
        ("base", 17, "2..16"),
        ("base", 2.5, "2..16"),
        ("cell", "Transformer", "RNN, LSTM, GRU"),
        ("cell", "rnn", "RNN, LSTM, GRU"),
        ("layers", 0, ">= 1"),
        ("hidden", 0, ">= 1"),
        ("hidden", True, ">= 1"),
        ("embed_dim", -3, ">= 1"),
        ("dropout", 1.0, "[0, 1)"),
    ],
)
def test_bad_config_names_field_value_and_allowed(field, value, allowed):
    with pytest.raises(ValueError, match=re.escape(f"{field}={value!r}") + ".*" + re.escape(allowed)):
        ModelConfig(**{field: value})


def test_one_hot_lookup_gives_the_embedding_layers_numbers():
    model = AdderRNN(ModelConfig(base=7, cell="GRU"))
    a, b = torch.randint(0, 7, (4, 6)), torch.randint(0, 7, (4, 6))
    reference = model.head(model.rnn(torch.cat((model.embed(a), model.embed(b)), dim=2))[0])
    assert torch.equal(model(a, b), reference)
