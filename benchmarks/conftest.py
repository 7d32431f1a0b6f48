import numpy as np
import pytest

PAPER_SIZES = [1024, 1000, 1000, 1000, 1000, 1000, 9]  # Shapeset input, 5 x 1000 tanh, 9 classes


@pytest.fixture(scope="session")
def batch_data():
    def make(batch, n_in=PAPER_SIZES[0], n_classes=PAPER_SIZES[-1]):
        rng = np.random.default_rng(0)
        return rng.random((batch, n_in), dtype=np.float32), rng.integers(0, n_classes, batch)
    return make
