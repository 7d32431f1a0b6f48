"""The paper's non-neural baseline: an RBF-kernel SVM on a finite Shapeset-3x2 training set.

The paper trains an RBF SVM on 100,000 Shapeset examples (59.47% test error) and a depth-5 Tanh N
net on the same finite set (50.47%) (the paper's §5). It does not give the SVM's C or
kernel width, so both are chosen here on the validation set from a small grid around
scikit-learn's ``gamma="scale"`` heuristic, 1 / (n_features * Var[x]).

Two methods, said in every result:

* ``exact``: :class:`sklearn.svm.SVC` (libsvm, one-vs-one). Its cost grows about as the square
  of the training set (a single core; 5,000 Shapeset images fit in about 10 s on an AMD Zen 3,
  and predicting 7,000 takes 30 s), so 100,000 is hours: the ``paper`` budget's choice.
* ``nystroem``: the kernel replaced by a rank-``n_components`` Nystroem approximation
  (:class:`sklearn.kernel_approximation.Nystroem`, landmarks drawn from the training set) and a
  linear SVM on those features (:class:`sklearn.svm.LinearSVC`: the squared hinge loss, whose
  dual solver converges several times faster here than the plain hinge's, one-vs-rest). Minutes on 100,000 images; its error is an upper bound on what the exact
  kernel machine reaches, the gap shrinking as ``n_components`` grows.

``method="auto"`` takes the exact SVC up to :data:`EXACT_MAX` training examples and the Nystroem
approximation above.
"""
import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from .checks import choose, positive, seed as check_seed
from .data.base import check_split
from .errors import InputError

EXACT_MAX = 10_000
METHODS = ("auto", "exact", "nystroem")


@dataclass
class SVMResult:
    """One fitted baseline: the chosen hyperparameters and its errors (fractions).

    ``grid`` holds every C, gamma and validation error tried, and whether the solver converged
    (the linear SVM of ``nystroem`` stops after 2,000 passes); ``seconds`` the wall time of the
    whole selection, fits and predictions included.
    """

    method: str
    n_train: int
    n_components: int
    C: float
    gamma: float
    valid_error: float
    test_error: float
    seconds: float
    grid: list

    def to_dict(self):
        return asdict(self)


def _sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise InputError("the SVM baseline needs scikit-learn: pip install 'fastff[svm]'") from None


def rbf_svm(train, valid, test, *, method="auto", C=(1.0, 10.0), gamma_factors=(0.5, 1.0, 2.0),
            n_components=3000, seed=0, progress=False):
    """Fit an RBF-kernel SVM, choosing C and the kernel width on the validation set.

    Parameters
    ----------
    train, valid, test : (x, y)
        Float inputs of shape (n, features) and class ids.
    method : str
        ``exact``, ``nystroem`` or ``auto`` (see the module docstring).
    C : sequence of float
        Penalties tried.
    gamma_factors : sequence of float
        Kernel widths tried, as multiples of 1 / (n_features * Var[x_train]).
    n_components : int
        Rank of the Nystroem approximation (capped at the training set's size).
    seed : int
        Seeds the Nystroem landmarks and the linear solver.
    progress : bool
        Print a line per fit.

    Returns
    -------
    SVMResult
    """
    _sklearn()
    C, gamma_factors = tuple(C), tuple(gamma_factors)
    (x, y), (xv, yv), (xt, yt) = _checked_sets(train, valid, test, method, C, gamma_factors,
                                               n_components, seed)
    n = len(y)
    if method == "auto":
        method = "exact" if n <= EXACT_MAX else "nystroem"
    n_components = min(n_components, n) if method == "nystroem" else 0
    scale = 1.0 / (x.shape[1] * float(x.var()))
    t0 = time.perf_counter()
    grid, best = [], None
    for factor in gamma_factors:
        gamma = scale * factor
        for c, err, converged, predict in _fits(method, x, y, xv, yv, C, gamma, n_components,
                                                seed):
            grid.append({"C": c, "gamma": gamma, "valid_error": err, "converged": converged})
            if progress:
                print(f"svm {method}: C={c:g} gamma={gamma:.4g}: valid error {100 * err:.2f}%",
                      flush=True)
            if best is None or err < best[0]:
                best = (err, c, gamma, predict)
    err, c, gamma, predict = best
    test_err = float(np.mean(predict(xt) != yt))
    return SVMResult(method=method, n_train=n, n_components=n_components, C=c, gamma=gamma,
                     valid_error=err, test_error=test_err,
                     seconds=round(time.perf_counter() - t0, 1), grid=grid)


def _checked_sets(train, valid, test, method, C, gamma_factors, n_components, seed):
    """rbf_svm's arguments checked; returns the three sets as float32 inputs and labels."""
    choose("method", method, dict.fromkeys(METHODS))
    check_seed(seed)
    positive("n_components", n_components, integer=True)
    if not C or not gamma_factors:
        raise InputError("C and gamma_factors need at least one value each")
    for name, values in (("C", C), ("gamma_factors", gamma_factors)):
        for v in values:
            positive(name, v)
    # class ids are checked against the largest one present (labels() refuses non-integers)
    ids = [np.asarray(split[1]) for split in (train, valid, test)
           if isinstance(split, (tuple, list)) and len(split) == 2]
    n_classes = max([int(a.max()) + 1 for a in ids
                     if a.size and np.issubdtype(a.dtype, np.integer)] + [2])
    n_in = None
    for name, split in (("train", train), ("valid", valid), ("test", test)):
        x, _ = check_split("rbf_svm", name, split, n_classes, n_in)
        n_in = x.shape[1]
    if len(np.unique(train[1])) < 2:
        raise InputError("rbf_svm: the training set needs at least two classes")
    sets = [(np.ascontiguousarray(a, np.float32), np.asarray(b)) for a, b in (train, valid, test)]
    if float(sets[0][0].var()) == 0:
        raise InputError("rbf_svm: the training inputs are constant; a kernel width cannot be "
                         "chosen from their variance")
    return sets


def _fits(method, x, y, xv, yv, C, gamma, n_components, seed):
    """Each C's fit at one kernel width: yields (C, validation error, converged, predict)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.kernel_approximation import Nystroem
    from sklearn.svm import SVC, LinearSVC
    if method == "nystroem":
        features = Nystroem(gamma=gamma, n_components=n_components, random_state=seed).fit(x)
        z, zv = features.transform(x), features.transform(xv)
    for c in C:
        if method == "exact":
            model = SVC(C=c, gamma=gamma, kernel="rbf", cache_size=1000).fit(x, y)
            predict, valid_pred, converged = model.predict, model.predict(xv), True
        else:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                model = LinearSVC(C=c, dual=True, max_iter=2000, random_state=seed).fit(z, y)
            predict = lambda a, m=model, f=features: m.predict(f.transform(a))  # noqa: E731
            valid_pred = model.predict(zv)  # the features of xv, already computed
            converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        yield c, float(np.mean(valid_pred != yv)), converged, predict
