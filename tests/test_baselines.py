"""The RBF SVM baseline: both methods on a small Shapeset set, and its arguments."""
import numpy as np
import pytest

import fastff
from fastff.baselines import rbf_svm
from fastff.errors import InputError

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def shapeset():
    return fastff.data.load("shapeset", seed=0, finite=600, valid_size=300, test_size=300)


def test_exact_and_approximate_svms_learn_and_say_what_they_are(shapeset):
    train, valid, test = shapeset.finite.train, shapeset.valid, shapeset.test
    exact = rbf_svm(train, valid, test, C=(1.0, 10.0), gamma_factors=(1.0,))
    assert exact.method == "exact" and exact.n_train == 600 and exact.n_components == 0
    assert [g["C"] for g in exact.grid] == [1.0, 10.0]
    assert min(g["valid_error"] for g in exact.grid) == exact.valid_error
    # better than always answering the majority class, which is wrong on 5/6 of the prior
    majority = np.mean(test[1] != np.bincount(train[1]).argmax())
    assert exact.test_error < majority - 0.03
    scale = 1 / (train[0].shape[1] * float(train[0].var()))
    assert exact.gamma == pytest.approx(scale, rel=1e-6)
    approx = rbf_svm(train, valid, test, method="nystroem", C=(0.1,), gamma_factors=(1.0, 2.0),
                     n_components=5000, seed=1)
    assert approx.method == "nystroem" and approx.n_components == 600  # capped at the set
    assert all(isinstance(g["converged"], bool) for g in approx.grid)
    assert approx.test_error < majority and len(approx.grid) == 2
    again = rbf_svm(train, valid, test, method="nystroem", C=(0.1,), gamma_factors=(1.0, 2.0),
                    n_components=5000, seed=1)
    assert again.test_error == approx.test_error  # seeded
    # auto: exact up to EXACT_MAX examples
    assert rbf_svm(train, valid, test, method="auto", C=(1.0,), gamma_factors=(1.0,)).method == "exact"


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="linear"), "unknown method"),
    (dict(C=()), "at least one"),
    (dict(C=(-1.0,)), "C must be"),
    (dict(gamma_factors=(0.0,)), "gamma_factors must be"),
    (dict(n_components=0), "n_components"),
    (dict(seed=-1), "seed"),
    (dict(train=(np.ones((5, 3)), np.arange(5))), "valid x has 1024 features, the training set 3"),
    (dict(train=(np.full((4, 1024), np.nan, np.float32), np.arange(4))), "NaN"),
    (dict(train=(np.ones((4, 1024), np.float32), np.zeros(4, int))), "two classes"),
    (dict(train=(np.ones((4, 1024), np.float32), np.arange(4) % 2)), "constant"),
])
def test_bad_arguments_are_refused(shapeset, kwargs, match):
    with pytest.raises(InputError, match=match):
        args = dict(train=shapeset.finite.train, valid=shapeset.valid, test=shapeset.test)
        rbf_svm(**{**args, **kwargs})
