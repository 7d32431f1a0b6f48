"""docs/protocol.md states the protocol of the paper's experiments as fastff runs them; these
tests read each value it states from fastff itself (the networks' sizes, the splits and their
scaling, the budgets' grids and horizons, the initializations, the order of examples) and fail
where the page and the code differ."""
import re
from pathlib import Path

import numpy as np
import pytest

import fastff
from fastff.data import ArrayDataset, cifar10, mnist, shapeset
from fastff.reproduction import glorot2010 as paper

PAGE = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def _grid(lrs):
    return ", ".join(f"{lr:g}" for lr in lrs)


def _chosen_seeds(budget):
    seeds = budget.chosen_seeds or {}
    return ", ".join(f"{paper.DATASET_TITLES[d]} {n}" for d, n in seeds.items()) or "-"


def budget_rows():
    """The page's table of budgets, row by row, from :data:`paper.BUDGETS`."""
    rows = []
    for b in paper.BUDGETS.values():
        finite = ", ".join(f"{d} {b.updates[d]:,}" for d in paper.DATASETS if d != "shapeset")
        others = {_grid(b.lrs[d]) for d in paper.DATASETS if d not in ("shapeset", "mnist")}
        assert len(others) == 1, "CIFAR-10 and Small-ImageNet share one grid in the page"
        evals = {b.evals[d] for d in paper.DATASETS if d != "shapeset"}
        assert len(evals) == 1
        rows.append(
            f"| `{b.name}` | {b.width} | {b.updates['shapeset']:,} | "
            f"{b.updates['mnist']:,} | {_grid(b.lrs['shapeset'])} | {_grid(b.lrs['mnist'])} | "
            f"{others.pop()} | {b.evals['shapeset']} / {evals.pop()} | {b.monitors} | {b.seeds} | "
            f"{_chosen_seeds(b)} | {b.shapeset_sizes[0]:,} / {b.shapeset_sizes[1]:,} | "
            f"{b.generator} | {b.widen} |")
        assert finite.count(f"{b.updates['mnist']:,}") == 3, "the finite datasets share a horizon"
    return rows


def test_the_budget_table_is_the_code_s():
    text = PAGE.read_text()
    for row in budget_rows():
        assert row in text, f"docs/protocol.md lacks (or states otherwise) the row\n{row}"


def test_the_page_states_the_sizes_and_splits():
    text = PAGE.read_text()
    # splits: MNIST 50,000 / 10,000 / 10,000 (the last 10,000 training images validate),
    # CIFAR-10 40,000 / 10,000 / 10,000
    assert mnist.N_TRAIN == 50_000 and "| MNIST split | train / validation / test 50,000 / 10,000 / 10,000 (§2.2)" in text
    assert "the last 10,000 of the 60,000 training images" in text
    assert cifar10.N_TRAIN == 40_000 and "40,000 / 10,000 / 10,000" in text
    # the networks: inputs and classes of each dataset
    assert (shapeset.SIZE ** 2, 9) == (1024, 9) and "1024-1000x5-9" in text
    assert "784-1000x5-10" in text and "3072-1000x5-10" in text and "1369-1000x5-10" in text
    # the monitor set and the Jacobian examples
    assert f"first {fastff.config.MONITOR_EXAMPLES} test examples" in text
    assert f"{fastff.config.JACOBIAN_EXAMPLES} of them" in text
    # the ladder a grid widens along
    assert f"`{_grid(paper.LR_LADDER)}`" in text
    assert f"p < {paper.SIGNIFICANCE_LEVEL:g}" in text


def _source(func):
    import inspect
    return inspect.getsource(func)


def _pixels(x):
    return float(x.min()), float(x.max())


def test_pixels_are_scaled_as_the_page_says():
    text = PAGE.read_text()
    assert "`x.astype(np.float32) * np.float32(1 / 255)` in [0, 1], no centring" in text
    for load in (mnist.load, cifar10.load):  # the finite sets: the one scaling, in the source
        assert "x = tx.astype(np.float32) * scale" in _source(load)
        assert "scale = np.float32(1 / 255.0)" in _source(load)
    d = shapeset.Shapeset(seed=3, valid_size=50, test_size=50)
    lo, hi = _pixels(d.valid[0])
    levels = np.arange(256, dtype=np.uint8)
    assert 0.0 <= lo and hi <= 1.0
    assert set(np.unique(d.valid[0])) <= set(levels.astype(np.float32) * np.float32(1 / 255))


def test_the_initial_weights_follow_the_page_s_recipe():
    # the page: rng = numpy.random.default_rng(seed); layer after layer, input first and the
    # softmax layer last, W = rng.uniform(-a, a, size=(n_in, n_out)) in float64, cast to
    # float32; biases 0; a = 1/sqrt(n_in) (standard), sqrt(6/(n_in+n_out)) (normalized)
    text = PAGE.read_text()
    assert "rng.uniform(-a, a, size=(n_in, n_out)).astype(np.float32)" in text
    bounds = {"standard": lambda i, o: 1 / np.sqrt(i), "normalized": lambda i, o: np.sqrt(6 / (i + o))}
    for init, bound in bounds.items():
        net = fastff.MLP("784-1000x5-10", activation="tanh", init=init, seed=7)
        rng = np.random.default_rng(7)
        for (n_in, n_out), (W, b) in zip(zip(net.sizes[:-1], net.sizes[1:]), net.params):
            a = bound(n_in, n_out)
            np.testing.assert_array_equal(W, rng.uniform(-a, a, size=(n_in, n_out)).astype(np.float32))
            assert not b.any()


def test_the_order_of_examples_follows_the_page_s_recipe():
    # epoch e is rng = default_rng([data_seed, e]).permutation(n); batch k is positions
    # 10k .. 10k+9 of the epochs' permutations one after another (across an epoch's end)
    text = PAGE.read_text()
    assert "numpy.random.default_rng([data_seed, e]).permutation(n)" in text
    rng = np.random.default_rng(0)
    n = 53  # a batch straddles each epoch's end
    x = rng.standard_normal((n, 4)).astype(np.float32)
    y = rng.integers(0, 3, n)
    d = ArrayDataset("d", (x, y), (x[:5], y[:5]), (x[:5], y[:5]), 3, seed=11)
    order = np.concatenate([np.random.default_rng([11, e]).permutation(n) for e in range(3)])
    for k in range(15):
        bx, by = d.train_batch(k, 10)
        np.testing.assert_array_equal(bx, x[order[10 * k:10 * k + 10]])
        np.testing.assert_array_equal(by, y[order[10 * k:10 * k + 10]])


def test_the_cost_is_the_batch_mean_as_the_page_says():
    text = PAGE.read_text()
    assert "the mean over the batch of −log softmax(z)[y]" in text
    from fastff.kernels import reference as ref
    rng = np.random.default_rng(1)
    z = rng.standard_normal((10, 9))
    y = rng.integers(0, 9, 10)
    loss, grad = ref.softmax_nll(z, y)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert loss == pytest.approx(-np.log(p[np.arange(10), y]).mean())
    np.testing.assert_allclose(grad, (p - np.eye(9)[y]) / 10)


def test_the_page_cites_the_paper_not_a_fact_sheet():
    text = PAGE.read_text()
    assert "reference section" not in text
    # every row of the protocol tables says what the paper says, with its section, or that it
    # does not say
    cells = [re.split(r"(?<!\\)\|", r)[1:-1] for r in text.splitlines() if r.startswith("| ")]
    rows = [c for c in cells if len(c) == 4 and c[0].strip() != "what"]
    assert len(rows) > 30
    for r in rows:
        said = r[1]
        assert re.search(r"§|Eq\.|Fig\.|Table 1|not stated", said), f"no source: {r}"


def test_no_reference_section_citation_is_left():
    root = PAGE.parents[1]
    files = [p for d in ("fastff", "docs", "benchmarks", "tests") for p in (root / d).rglob("*")
             if p.suffix in (".py", ".md", ".cu", ".cuh") and p.is_file()]
    files += [root / "README.md", root / "CONTRIBUTING.md"]
    bad = [f"{p.relative_to(root)}:{i}" for p in files if p != Path(__file__).resolve()
           for i, line in enumerate(p.read_text().splitlines(), 1)
           if re.search(r"reference (section|§)|fact sheet|reference/glorot2010", line)]
    assert not bad, bad


@pytest.mark.slow
def test_the_reference_values_of_the_replicated_mnist_run():
    # the page's table for Tanh N on MNIST, seed 0, lr 0.03, 200 updates
    text = PAGE.read_text()
    try:
        data = fastff.data.load("mnist", seed=0)
    except fastff.DataError as exc:
        pytest.skip(f"MNIST is not at hand: {exc}")
    order = np.random.default_rng([0, 0]).permutation(mnist.N_TRAIN)[:10]
    x, y = data.train_batch(0, 10)
    np.testing.assert_array_equal(x, data.train[0][order])
    levels = np.arange(256, dtype=np.uint8).astype(np.float32) * np.float32(1 / 255)
    assert set(np.unique(x)) <= set(levels)
    assert f"| its first batch: training images | {', '.join(map(str, order))} |" in text
    assert f"| their labels | {', '.join(map(str, y))} |" in text
    net = fastff.MLP("784-1000x5-10", activation="tanh", init="normalized", seed=0)
    row = ", ".join(f"{v:.8f}" for v in net.params[0][0][0, :3])
    assert f"| `W[0][0, :3]`, the first layer's first row | {row} |" in text
    run = fastff.train("1000x5", dataset=data, activation="tanh", init="normalized", seed=0,
                       lr=0.03, updates=200, eval_every=200, monitor_every=0, progress=False)
    errors = f"{100 * run.final['valid_error']:.2f}%, {100 * run.final['test_error']:.2f}%"
    assert f"| validation and test error after 200 updates | {errors} |" in text
