"""What every dataset gives the trainer: random-access training batches and fixed eval sets.

Training batch ``k`` is a pure function of (seed, k, batch_size), so a resumed run sees exactly
the batches an uninterrupted one would.
"""
import numpy as np

from ..checks import finite, float_array, labels, positive, seed as check_seed
from ..errors import InputError


def check_split(dataset, split_name, split, n_classes, n_in=None):
    """Check one (x, y) split of a dataset: float inputs, finite, labels in [0, n_classes)."""
    if not (isinstance(split, (tuple, list)) and len(split) == 2):
        raise InputError(f"{dataset}: the {split_name} split must be a pair (x, y), "
                         f"got {type(split).__name__}")
    x, y = split
    where = f"{dataset} {split_name}"
    float_array(f"{where} x", x, 2)
    if n_in is not None and x.shape[1] != n_in:
        raise InputError(f"{where} x has {x.shape[1]} features, the training set {n_in}")
    finite(f"{where} x", x)
    try:
        labels(y, x.shape[0], n_classes)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    return x, y


class Dataset:
    """A classification dataset: ``train_batch(k, batch_size)``, ``valid`` and ``test``.

    Attributes
    ----------
    name : str
    n_in : int
        Input features per example.
    n_classes : int
    valid, test : tuple of (ndarray (n, n_in) float32, ndarray (n,) int64)
    """

    name = "dataset"
    n_in = 0
    n_classes = 0
    valid = None
    test = None

    def train_batch(self, k, batch_size):
        """The k-th training minibatch (x, y)."""
        raise NotImplementedError

    def device_batch(self, k, batch_size, backend):
        """Training batch k made where ``backend`` keeps its arrays (a GPU), or None where this
        dataset cannot: the trainer then uploads :meth:`train_batch`'s."""
        return None

    def monitor_set(self, n):
        """The first ``n`` test examples: the paper's fixed monitor set (300 examples)."""
        x, y = self.test
        return x[:n], y[:n]

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}: {self.n_in} inputs, {self.n_classes} classes>"


class ArrayDataset(Dataset):
    """A finite dataset held in memory; every epoch is a fresh seeded permutation."""

    def __init__(self, name, train, valid, test, n_classes, seed=0):
        self.name = str(name)
        positive("n_classes", n_classes, integer=True)
        if n_classes < 2:
            raise InputError(f"{name}: a classification dataset needs at least 2 classes")
        self.train = check_split(name, "train", train, n_classes)
        self.n_in = train[0].shape[1]
        self.valid = check_split(name, "valid", valid, n_classes, self.n_in)
        self.test = check_split(name, "test", test, n_classes, self.n_in)
        self.n_classes = int(n_classes)
        self.seed = check_seed(seed)
        self._perm_epoch, self._perm = None, None

    def _permutation(self, epoch):
        if epoch != self._perm_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm, self._perm_epoch = rng.permutation(self.train[0].shape[0]), epoch
        return self._perm

    def device_batch(self, k, batch_size, backend):
        """Training batch k gathered on ``backend``'s device from a copy of the training set
        staged there on the first call: the rows of :meth:`train_batch`, with one upload of
        each epoch's permutation (not one of each batch), into buffers reused from call to
        call (the batch is valid until the next call)."""
        staged = self.__dict__.get("_staged")
        if staged is None or staged["backend"] is not backend:
            staged = self._staged = dict(backend=backend, x=backend.to_device(self.train[0]),
                                         y=backend.to_device(self.train[1], np.int64),
                                         epoch=None, perm=None, out={})
        n = staged["x"].shape[0]
        epoch, pos = divmod(k * batch_size, n)
        if pos + batch_size > n:  # the batch spans two epochs: its indices from the host
            idx = backend.to_device(self._indices(k, batch_size))
        else:
            if staged["epoch"] != epoch:
                staged["perm"] = backend.to_device(self._permutation(epoch))
                staged["epoch"] = epoch
            idx = staged["perm"][pos:pos + batch_size]
        x, y = staged["x"], staged["y"]
        out = staged["out"].get(batch_size)
        if out is None:
            out = staged["out"][batch_size] = (backend.empty((batch_size, x.shape[1]), x.dtype),
                                               backend.empty(batch_size, y.dtype))
        xp = backend.xp
        xp.take(x, idx, axis=0, out=out[0])
        xp.take(y, idx, axis=0, out=out[1])
        return out

    def _indices(self, k, batch_size):
        n = self.train[0].shape[0]
        start = k * batch_size
        idx = np.empty(batch_size, np.int64)
        for p in range(batch_size):  # positions in the endless sequence of epoch permutations
            epoch, pos = divmod(start + p, n)
            idx[p] = self._permutation(epoch)[pos]
        return idx

    def train_batch(self, k, batch_size):
        idx = self._indices(k, batch_size)
        return self.train[0][idx], self.train[1][idx]
