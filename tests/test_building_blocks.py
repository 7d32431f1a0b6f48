"""Initializations, activations and architecture parsing."""
import numpy as np
import pytest

from fastff import activations, arch, init
from fastff.errors import InputError

EXPECTED_VAR = {
    "standard": lambda i, o: 1 / (3 * i),
    "normalized": lambda i, o: 2 / (i + o),
    "xavier": lambda i, o: 2 / (i + o),
    "glorot": lambda i, o: 2 / (i + o),
    "he": lambda i, o: 2 / i,
    "lecun": lambda i, o: 1 / i,
    "normal": lambda i, o: 1.0,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_VAR))
def test_init_variances(name):
    W = init.init_weights(name, 1000, 1000, np.random.default_rng(0))
    assert W.shape == (1000, 1000) and W.dtype == np.float32
    assert W.var() == pytest.approx(EXPECTED_VAR[name](1000, 1000), rel=0.03)
    assert abs(W.mean()) < 0.01 * np.sqrt(W.var()) * 10


def test_init_bounds_match_the_paper_table():
    rng = np.random.default_rng(1)
    W = init.init_weights("standard", 1024, 1000, rng)
    assert np.abs(W).max() <= 1 / 32 and np.abs(W).max() > 0.0312  # 1/sqrt(1024) = 0.03125
    W = init.init_weights("normalized", 1000, 9, rng)
    assert np.abs(W).max() <= np.sqrt(6 / 1009) and np.abs(W).max() > 0.076  # table: 0.0771


def test_init_errors():
    with pytest.raises(InputError, match="valid: glorot, he, lecun, normal, normalized, standard, xavier"):
        init.init_weights("kaiming", 3, 3, np.random.default_rng(0))
    with pytest.raises(InputError, match="n_in"):
        init.init_weights("standard", 0, 3, np.random.default_rng(0))


@pytest.mark.parametrize("name", list(activations.ACTIVATIONS))
def test_derivative_from_output_matches_numeric(name):
    act = activations.get(name)
    s = np.linspace(-4, 4, 81) + 0.013  # avoid relu's kink at 0
    h = act.forward(s)
    eps = 1e-6
    numeric = (act.forward(s + eps) - act.forward(s - eps)) / (2 * eps)
    np.testing.assert_allclose(act.derivative(h), numeric, rtol=1e-6, atol=1e-8)
    lo, hi = act.output_range
    assert (h >= lo).all() and (h <= hi).all()


def test_activation_names():
    with pytest.raises(InputError, match="valid: relu, sigmoid, softsign, tanh"):
        activations.get_hidden("linear")
    assert activations.get("tanh").thresholds == (-0.99, 0.99)


@pytest.mark.parametrize("spec, n_in, n_out, expected", [
    ("1024-1000x5-9", None, None, [1024] + [1000] * 5 + [9]),
    ([1024, 1000, 9], None, None, [1024, 1000, 9]),
    ("1000x5", 1024, 9, [1024] + [1000] * 5 + [9]),
    ([1000] * 2, 784, 10, [784, 1000, 1000, 10]),
    ("1024-1000x5-9", 1024, 9, [1024] + [1000] * 5 + [9]),
    (" 7 - 500 x 2 - 30 -3", 7, 3, [7, 500, 500, 30, 3]),
    ([500, 500, 30], 7, 3, [7, 500, 500, 30, 3]),
    ("1024-9", 1024, 9, [1024, 9]),  # softmax regression, not 1024-1024-9-9
])
def test_parse_sizes(spec, n_in, n_out, expected):
    assert arch.parse_sizes(spec, n_in, n_out) == expected


@pytest.mark.parametrize("spec", ["", "1000y5", "1000x0", [0, 3], "abc", [1.5, 2], "10"])
def test_parse_sizes_rejects(spec):
    with pytest.raises(InputError):
        arch.parse_sizes(spec)


@pytest.mark.parametrize("spec", ["784-20-10", "1024-20-10", "500-250", "1024-1000x5-10"])
def test_full_sizes_that_contradict_the_dataset_are_refused(spec):
    with pytest.raises(InputError, match="dataset has 1024 inputs and 9 classes"):
        arch.parse_sizes(spec, 1024, 9)
