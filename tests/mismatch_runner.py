"""Child process of test_random_mismatches.py: random mismatches thrown at the public API.

``python mismatch_runner.py SEED FIRST LAST`` runs cases FIRST..LAST-1. Case i starts from a
valid call (seeded by SEED and i) to a public kernel or model method and applies 0 to 2 random
changes. Some changes break the contract (statistics of another layer, labels out of range,
wrong shapes or dtypes, NaN, a bad learning rate, ...), others keep it (Fortran order, strided
views). For each case it prints ``BEGIN i`` before the call and one result line after it:

* ``OK i error``: a change broke the contract and a fastff error was raised;
* ``OK i match``: no change broke it and the result equals the NumPy reference's;
* ``BAD i ...``: anything else (another exception, a result despite a broken contract, numbers
  that differ). A crash or a hang leaves a ``BEGIN`` without its result: the parent sees it.
"""
import copy
import sys
import traceback

import numpy as np

import fastff
from fastff import kernels
from fastff.errors import FastffError
from fastff.kernels import BackwardStats, ForwardStats, LayerRates, cpu, reference as ref

ACTS = ["sigmoid", "tanh", "softsign", "relu", "linear"]
BATCHES = [1, 3, 10, 13, 16, 17, 37]
WIDTHS = [1, 2, 5, 7, 13, 31, 64]


def pick(rng, seq):
    """One element of a list of mixed things (rng.choice wants them homogeneous)."""
    return seq[int(rng.integers(len(seq)))]


def _tol(dtype):
    return (3e-5, 3e-4) if dtype == np.float32 else (1e-10, 1e-9)


def close(a, b, dtype, scale=1.0):
    atol, rtol = _tol(dtype)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= atol * scale + rtol * np.abs(b)))


def layer_case(rng, op):
    dtype = rng.choice([np.float32, np.float64])
    B, n_in, n_out = rng.choice(BATCHES), rng.choice(WIDTHS), rng.choice(WIDTHS)
    act = str(rng.choice(ACTS))
    x = rng.standard_normal((B, n_in)).astype(dtype)
    W = (rng.standard_normal((n_in, n_out)) * 2 / np.sqrt(n_in)).astype(dtype)
    b = (rng.standard_normal(n_out) * 0.3).astype(dtype)
    a = dict(x=x, W=W, b=b, activation=act, act0=act, n_out=n_out, dtype=dtype)
    if op == "forward":
        a["stats"] = ForwardStats(n_out, act) if rng.random() < 0.7 else None
        a["out"] = np.empty((B, n_out), dtype) if rng.random() < 0.3 else None
    elif op in ("backward", "second_order"):
        if op == "second_order" and B == 1:
            B, x = 2, np.concatenate([x, x * 0.5])  # one row is a broken grad_variance call
            a["x"] = x
        a["h"] = ref.dense_forward(x, W, b, act)
        a["grad_h"] = rng.standard_normal((B, n_out)).astype(dtype)
        a["lr"] = float(rng.choice([0.01, 0.5]))
        a["stats"] = BackwardStats(n_out, weight_grad=bool(rng.random() < 0.5)) if rng.random() < 0.7 else None
        a["grad_x"] = np.empty((B, n_in), dtype) if rng.random() < 0.3 else None
        if op == "second_order":
            method = str(rng.choice(["diag_hessian", "grad_variance"]))
            a["grad_h"] /= B
            a["rates"] = LayerRates(n_in, n_out, method, dtype)
            hessian = method == "diag_hessian"
            a["curv_h"] = (rng.random((B, n_out)) / B).astype(dtype) if hessian else None
            a["curv_x"] = np.empty((B, n_in), dtype) if hessian and rng.random() < 0.3 else None
    else:  # softmax
        a = dict(z=(rng.standard_normal((B, n_out + 1)) * 3).astype(dtype), dtype=dtype)
        a["y"] = rng.integers(0, n_out + 1, B)
        a["cost"] = str(rng.choice(["softmax_nll", "softmax_quadratic"]))
    return a


# -- changes: (name, keeps the contract, applies to ops, function(args, rng)) -----------------
def _other_width(a, rng, cls):
    n = a["n_out"]
    other = int(rng.choice([w for w in (1, 3, n + 1, n * 40 + 7) if w != n]))
    return ForwardStats(other, a["act0"]) if cls is ForwardStats else BackwardStats(other)


def _tamper(a, rng):
    st = a["stats"] if isinstance(a.get("stats"), (ForwardStats, BackwardStats)) else (
        ForwardStats(a["n_out"], a["act0"]) if "h" not in a else BackwardStats(a["n_out"]))
    if isinstance(st, ForwardStats):
        name = str(rng.choice(["hist", "sat_low", "total", "rows"]))
        length = pick(rng, [k for k in (0, 1, 2, 3) if k != len(getattr(st, name))])
        setattr(st, name, np.zeros(length, getattr(st, name).dtype))  # any length but its own
    else:
        name = str(rng.choice(["delta_total", "counts", "grad_w_total_sq"]))
        setattr(st, name, np.zeros(7, np.float32))
    a["stats"] = st


def _tamper_rates(a, rng):
    rates = copy.deepcopy(a["rates"])
    kind = int(rng.integers(0, 5))
    if kind == 0:
        rates.W = np.zeros((rates.W.shape[0], rates.W.shape[1] + 1), rates.W.dtype)
    elif kind == 1:
        rates.b = rates.b[:-1] if len(rates.b) > 1 else np.zeros(3, rates.b.dtype)
    elif kind == 2:
        rates.steps = pick(rng, [-1, 2.5, "3", None])
    elif kind == 3:
        rates.damping = pick(rng, [0.0, -1.0, float("nan"), "1e-3"])
    else:
        rates.method = pick(rng, ["adam", None, "diag"])
    a["rates"] = rates


def _swap_curv(a, rng):
    """curv_h missing for diag_hessian, or given to grad_variance."""
    if a["rates"].method == "diag_hessian":
        a["curv_h"] = None
    else:
        a["curv_h"] = np.ones_like(a["grad_h"])


def _one_row(a, rng):
    if a["rates"].method != "grad_variance":
        raise TypeError("a one-row batch is valid for diag_hessian")  # skipped
    a.update(x=a["x"][:1], h=a["h"][:1], grad_h=a["grad_h"][:1], grad_x=None)


def _labels(a, rng):
    k = a["z"].shape[1]
    a["y"] = a["y"].copy()
    a["y"][int(rng.integers(0, len(a["y"])))] = int(rng.choice([k, k + 1, 100_000_000, -1, -100]))


CHANGES = [
    ("stats of another width", False, ("forward",),
     lambda a, r: a.update(stats=_other_width(a, r, ForwardStats))),
    ("stats of another activation", False, ("forward",),
     lambda a, r: a.update(stats=ForwardStats(a["n_out"], next(
         x for x in ACTS if x != a["act0"])))),
    ("backward stats of another width", False, ("backward", "second_order"),
     lambda a, r: a.update(stats=_other_width(a, r, BackwardStats))),
    ("stats of the wrong kind", False, ("forward", "backward", "second_order"),
     lambda a, r: a.update(stats=pick(r, [{}, [1, 2], "stats", 3]))),
    ("tampered stats arrays", False, ("forward", "backward", "second_order"), _tamper),
    ("x of another dtype", False, ("forward", "backward", "second_order"),
     lambda a, r: a.update(x=a["x"].astype(np.float32 if a["dtype"] == np.float64 else np.float64))),
    ("x with other features", False, ("forward", "backward", "second_order"),
     lambda a, r: a.update(x=np.ones((a["x"].shape[0], a["x"].shape[1] + 1), a["dtype"]))),
    ("integer x", False, ("forward", "backward", "second_order"), lambda a, r: a.update(x=a["x"].astype(np.int32))),
    ("x with NaN", False, ("forward", "backward", "second_order"),
     lambda a, r: a.update(x=np.where(a["x"] > 0.5, np.nan, a["x"]).astype(a["dtype"]) if (a["x"] > 0.5).any()
                           else np.full_like(a["x"], np.inf))),
    ("3-d x", False, ("forward",), lambda a, r: a.update(x=a["x"][None])),
    ("empty x", False, ("forward", "backward", "second_order"), lambda a, r: a.update(x=a["x"][:0])),
    ("b too short", False, ("forward", "backward", "second_order"), lambda a, r: a.update(b=a["b"][:-1] if len(a["b"]) > 1 else a["b"][:0])),
    ("bad activation", False, ("forward", "backward", "second_order"), lambda a, r: a.update(activation="tanhh")),
    ("out of another shape", False, ("forward",),
     lambda a, r: a.update(out=np.empty((a["x"].shape[0] + 1, a["n_out"]), a["dtype"]))),
    ("out of another dtype", False, ("forward",),
     lambda a, r: a.update(out=np.empty((a["x"].shape[0], a["n_out"]), np.float16))),
    ("h of another shape", False, ("backward", "second_order"), lambda a, r: a.update(h=a["h"][:, :-1] if a["h"].shape[1] > 1 else a["h"][:0])),
    ("grad_h with inf", False, ("backward", "second_order"), lambda a, r: a.update(grad_h=a["grad_h"] * np.inf)),
    ("bad lr", False, ("backward", "second_order"),
     lambda a, r: a.update(lr=pick(r, [0.0, -1.0, float("nan"), float("inf"), "0.1", None,
                                         np.array([0.01]), True]))),
    ("grad_x of another shape", False, ("backward", "second_order"),
     lambda a, r: a.update(grad_x=np.empty((a["x"].shape[0], a["x"].shape[1] + 2), a["dtype"]))),
    ("rates of another shape", False, ("second_order",),
     lambda a, r: a.update(rates=LayerRates(a["W"].shape[0] + 1, a["n_out"], a["rates"].method,
                                            a["dtype"]))),
    ("rates of another dtype", False, ("second_order",),
     lambda a, r: a.update(rates=LayerRates(*a["W"].shape, a["rates"].method,
                                            np.float32 if a["dtype"] == np.float64 else np.float64))),
    ("rates of the wrong kind", False, ("second_order",),
     lambda a, r: a.update(rates=pick(r, [None, {}, "diag_hessian", BackwardStats(3)]))),
    ("tampered rates", False, ("second_order",), _tamper_rates),
    ("curv_h missing or out of place", False, ("second_order",), _swap_curv),
    ("curv_h with NaN", False, ("second_order",),
     lambda a, r: a.update(curv_h=np.full_like(a["grad_h"], np.nan))),
    ("curv_h of another shape", False, ("second_order",),
     lambda a, r: a.update(curv_h=np.ones((a["grad_h"].shape[0] + 1, a["n_out"]), a["dtype"]))),
    ("one-row batch for grad_variance", False, ("second_order",), _one_row),
    ("labels out of range", False, ("softmax",), _labels),
    ("float labels", False, ("softmax",), lambda a, r: a.update(y=a["y"].astype(np.float64))),
    ("labels of another length", False, ("softmax",), lambda a, r: a.update(y=np.append(a["y"], 0))),
    ("labels as a list", False, ("softmax",), lambda a, r: a.update(y=list(a["y"]))),
    ("Fortran-order x", True, ("forward", "backward", "second_order"), lambda a, r: a.update(x=np.asfortranarray(a["x"]))),
    ("strided x", True, ("forward", "backward", "second_order"),
     lambda a, r: a.update(x=np.repeat(a["x"], 2, axis=1)[:, ::2])),
    ("Fortran-order z", True, ("softmax",), lambda a, r: a.update(z=np.asfortranarray(a["z"]))),
]


def run_layer(op, rng):
    a = layer_case(rng, op)
    backend = {"cpu": cpu, "reference": ref, "dispatch": kernels}[str(rng.choice(["cpu", "reference", "dispatch"]))]
    valid = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in a.items()}
    applicable = [c for c in CHANGES if op in c[2]]
    picked = [applicable[i] for i in rng.choice(len(applicable), size=int(rng.integers(0, 3)), replace=False)]
    chosen = []
    for change in picked:
        try:  # a change may not apply after another (labels already a list, say): skip it
            change[3](a, rng)
            chosen.append(change)
        except (AttributeError, TypeError, IndexError):
            pass
    broken = [name for name, keeps, _, _ in chosen if not keeps]
    try:
        got = call(op, backend, a)
    except FastffError:
        return ("error", None) if broken else ("BAD", f"fastff error for a valid call ({[c[0] for c in chosen]})\n{traceback.format_exc()}")
    except Exception:
        return "BAD", f"{[c[0] for c in chosen]} raised a non-fastff error:\n{traceback.format_exc()}"
    if broken:
        return "BAD", f"returned a result despite: {broken}"
    want = call(op, ref, valid)
    if not all(close(g, w, a["dtype"], scale=max(1.0, float(np.abs(w).max()) if np.size(w) else 1.0))
               for g, w in zip(got, want)):
        return "BAD", f"result differs from the reference ({[c[0] for c in chosen]})"
    return "match", None


def call(op, backend, a):
    """The call under test; returns a tuple of arrays to compare with the reference."""
    if op == "forward":
        st = a.get("stats")
        h = backend.dense_forward(a["x"], a["W"], a["b"], a["activation"], out=a.get("out"), stats=st)
        extra = (st.sat_low, st.sat_high, st.hist, st.total) if isinstance(st, ForwardStats) else ()
        return (h,) + extra
    if op == "backward":
        W, b, st = a["W"].copy(), a["b"].copy(), a.get("stats")
        gx = backend.dense_backward_sgd(a["x"], a["h"], W, b, a["grad_h"], a["activation"], a["lr"],
                                        grad_x=a.get("grad_x"), stats=st)
        extra = (st.delta_total, st.counts) if isinstance(st, BackwardStats) else ()
        return (gx, W, b) + extra
    if op == "second_order":
        W, b, st = a["W"].copy(), a["b"].copy(), a.get("stats")
        rates = copy.deepcopy(a["rates"])  # the step updates its averages
        gx, cx = backend.dense_backward_second_order(
            a["x"], a["h"], W, b, a["grad_h"], a["activation"], a["lr"], rates,
            curv_h=a.get("curv_h"), grad_x=a.get("grad_x"), curv_x=a.get("curv_x"), stats=st)
        extra = (st.delta_total, st.counts) if isinstance(st, BackwardStats) else ()
        return tuple(np.zeros(0) if v is None else v
                     for v in (gx, cx, W, b, rates.W, rates.b) + extra)
    loss, g = getattr(backend, a["cost"])(a["z"], a["y"])
    return (np.float64(loss), g)


def run_model(rng):
    """MLP.step with mismatched statistics, labels or inputs, against a reference model."""
    act = str(rng.choice(ACTS[:4]))
    sizes = [int(rng.choice(WIDTHS[2:]))] + [int(rng.choice(WIDTHS[1:])) for _ in range(int(rng.integers(1, 4)))] + [int(rng.integers(2, 6))]
    dtype = str(rng.choice(["float32", "float64"]))
    net = fastff.MLP(sizes, activation=act, dtype=dtype, seed=int(rng.integers(0, 99)))
    twin = fastff.MLP(sizes, activation=act, dtype=dtype, seed=net.seed, kernels="reference")
    B = int(rng.choice(BATCHES))
    x = rng.standard_normal((B, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], B)
    stats, broken = net.new_stats(), []
    kind = int(rng.integers(0, 7))
    if kind == 0:
        other = list(sizes)
        other[int(rng.integers(1, len(sizes) - 1))] += int(rng.choice([-1, 1, 50])) if other[1] > 1 else 1
        stats, broken = fastff.MLP(other, activation=act, dtype=dtype).new_stats(), ["stats of another network"]
    elif kind == 1:
        stats = fastff.MLP(sizes, activation=next(a for a in ACTS[:4] if a != act)).new_stats()
        broken = ["stats of another activation"]
    elif kind == 2:
        y = y.copy()
        y[0] = int(rng.choice([sizes[-1], 100_000_000, -1, -100]))
        broken = ["label out of range"]
    elif kind == 3:
        x, broken = x[:, :-1], ["x with other features"]
    elif kind == 4:
        stats, broken = fastff.MLP(sizes[:1] + sizes[2:] if len(sizes) > 3 else sizes + [3],
                                   activation=act).new_stats(), ["stats of a deeper/shallower net"]
    elif kind == 5:
        x, broken = (x * 50).astype(np.uint8), ["uint8 x"]
    try:
        loss = net.step(x, y, 0.05, stats=stats)
    except FastffError:
        return ("error", None) if broken else ("BAD", traceback.format_exc())
    except Exception:
        return "BAD", f"{broken} raised a non-fastff error:\n{traceback.format_exc()}"
    if broken:
        return "BAD", f"MLP.step returned despite: {broken}"
    want = twin.step(x, y, 0.05)
    if not close(loss, want, np.dtype(dtype), scale=max(1, abs(want))):
        return "BAD", f"loss {loss} differs from the reference's {want}"
    for (W1, b1), (W2, b2) in zip(net.params, twin.params):
        if not (close(W1, W2, np.dtype(dtype)) and close(b1, b2, np.dtype(dtype))):
            return "BAD", "parameters differ from the reference's after one step"
    return "match", None


def run_case(seed, i):
    rng = np.random.default_rng([seed, i])
    op = str(rng.choice(["forward", "backward", "second_order", "softmax", "model"],
                        p=[0.25, 0.25, 0.15, 0.12, 0.23]))
    with np.errstate(all="ignore"):
        return op, (run_model(rng) if op == "model" else run_layer(op, rng))


def main(seed, first, last):
    for i in range(first, last):
        print(f"BEGIN {i}", flush=True)
        op, (outcome, detail) = run_case(seed, i)
        if outcome == "BAD":
            print(f"BAD {i} {op}: " + detail.replace("\n", "\\n"), flush=True)
        else:
            print(f"OK {i} {op} {outcome}", flush=True)


if __name__ == "__main__":
    main(*map(int, sys.argv[1:4]))
