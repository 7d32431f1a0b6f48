"""fastff reproduce glorot2010: learning-rate selection, Table 1, and the smoke budget end to end."""
import csv
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

import fastff

from fastff.cli import main
from fastff.errors import InputError
from fastff.reproduction import chosen_runs, glorot2010, reproduce
from fastff.reproduction.glorot2010 import model_of
from fastff.reproduction.table import choose_lr, experiments_table, grid_edge, markdown, table1

if not os.environ.get("CI"):
    pytest.importorskip("distributed")


def _row(lr, valid, test=0.5, status="done", seed=0, dataset="shapeset", model="Tanh N",
         updates=100):
    m = glorot2010.MODEL_BY_NAME[model]
    row = dict(name=f"{model}-{lr}-{seed}", dataset=dataset, arch=f"8x{m.depth}",
               activation=m.activation, init=m.init, lr=lr, seed=seed, status=status,
               valid_error=valid, test_error=test, updates_done=updates)
    if m.pretrain:
        row["pretrain"] = m.pretrain
    if m.loss != "nll":
        row["loss"] = m.loss
    if m.finite:  # as runs.csv writes it: JSON text
        row["data_options"] = json.dumps({"valid_size": 10, "finite": 100})
    if m.optimizer != "sgd":
        row["optimizer"] = m.optimizer
    return row


def test_the_lowest_mean_validation_error_wins():
    runs = [_row(0.01, 0.30, seed=0), _row(0.01, 0.20, seed=1),   # mean 0.25
            _row(0.1, 0.22, seed=0), _row(0.1, 0.26, seed=1),     # mean 0.24: chosen
            _row(0.03, 0.10, seed=0), _row(0.03, 0.45, seed=1)]   # one lucky seed, mean 0.275
    lr, chosen, note = choose_lr(runs)
    assert lr == 0.1 and [r["seed"] for r in chosen] == [0, 1]
    assert note == "lr 0.1 is the largest of the grid: the best rate may lie beyond it"


def test_ties_go_to_the_smaller_learning_rate():
    runs = [_row(0.1, 0.25), _row(0.03, 0.25), _row(0.3, 0.25)]
    assert choose_lr(runs)[0] == 0.03
    # the rule does not depend on the order of the rows, nor on lr being a string (runs.csv)
    assert choose_lr([dict(r, lr=str(r["lr"])) for r in reversed(runs)])[0] == 0.03


def test_a_diverged_learning_rate_is_never_chosen_and_failures_are_said():
    runs = [_row(0.3, 0.05, status="diverged", seed=0), _row(0.3, 0.04, seed=1),
            _row(0.1, 0.30), _row(0.01, "", status="failed"), _row(0.01, 0.50)]
    lr, chosen, note = choose_lr(runs)
    assert lr == 0.1 and len(chosen) == 1
    assert "lr 0.3 diverged" in note and "lr 0.01: 1 of 2 runs failed" in note
    assert choose_lr([_row(0.1, "", status="failed")])[0] is None
    assert choose_lr([])[:2] == (None, [])


def test_table1_means_stds_bold_and_paper_numbers():
    rng = np.random.default_rng(7)
    rows = []
    truth = {"Softsign": 0.16, "Softsign N": 0.161, "Tanh": 0.27, "Tanh N": 0.156,
             "Sigmoid": 0.83, "Sigmoid depth 4": 0.40}
    for model, err in truth.items():
        for seed in range(4):
            for lr, shift in ((0.01, 0.05), (0.1, 0.0)):
                e = err + shift + rng.normal(0, 0.002)
                rows.append(_row(lr, e + 0.01, test=e, seed=seed, model=model))
    rows.append(_row(0.1, 0.2, dataset="mnist"))
    table = table1(rows, ["shapeset", "cifar10"], {"shapeset": 5000},
                   skipped={"cifar10": "not found"})
    assert len(table) == 12
    by = {(r["dataset"], r["model"]): r for r in table}
    tanh_n = by[("shapeset", "Tanh N")]
    chosen = [r["test_error"] for r in rows if r["dataset"] == "shapeset" and r["lr"] == 0.1
              and r["activation"] == "tanh" and r["init"] == "normalized"]
    assert tanh_n["lr"] == 0.1 and tanh_n["seeds"] == 4 and tanh_n["updates"] == 100
    assert math.isclose(tanh_n["test_error"], 100 * np.mean(chosen), abs_tol=1e-4)
    assert math.isclose(tanh_n["test_error_std"], 100 * np.std(chosen, ddof=1), abs_tol=1e-4)
    assert tanh_n["paper_test_error"] == 15.60 and tanh_n["test"] == "best" and tanh_n["bold"]
    # 0.4 points apart with 0.2-point noise and 4 seeds: not significant at p = 0.005
    assert by[("shapeset", "Softsign")]["bold"] and by[("shapeset", "Softsign")]["test"] == "paired-t"
    assert by[("shapeset", "Softsign")]["p_vs_best"] >= 0.005
    for model in ("Tanh", "Sigmoid", "Sigmoid depth 4"):
        assert not by[("shapeset", model)]["bold"] and by[("shapeset", model)]["p_vs_best"] < 0.005
    assert by[("shapeset", "Sigmoid depth 4")]["paper_test_error"] == ""  # not in the paper
    skipped = by[("cifar10", "Tanh N")]
    assert skipped["note"] == "skipped: not found" and skipped["test_error"] == ""
    md = markdown(table, glorot2010.BUDGETS["smoke"])
    assert re.search(r"\| Tanh N \| \*\*15\.\d\d ± 0\.\d\d\*\* \[0\.1\] \(15\.60\) \| n/a \(52\.92\)", md)
    assert "- CIFAR-10: skipped: not found" in md
    assert "paired t-test over seeds" in md


def test_seeds_are_paired_run_by_run_and_welch_stands_in_for_unmatched_seeds():
    from scipy import stats
    from fastff.reproduction.table import _p_value
    # a shared per-seed effect (the same data and initial draws) with a small steady gap:
    # the paired test sees the gap, Welch's drowns it in the seeds' spread
    seed_effect = [0.00, 0.03, -0.02, 0.05]
    a = {s: 0.20 + e for s, e in enumerate(seed_effect)}
    b = {s: 0.21 + e + 0.001 * (-1) ** s for s, e in enumerate(seed_effect)}
    p, test = _p_value(b, a, 10_000)
    assert test == "paired-t" and p == pytest.approx(stats.ttest_rel(list(b.values()),
                                                                      list(a.values())).pvalue)
    assert p < 0.005
    welch = stats.ttest_ind(list(b.values()), list(a.values()), equal_var=False).pvalue
    assert welch > 0.5
    # other seeds on one side: unpaired
    shifted = {s + 10: v for s, v in b.items()}
    assert _p_value(shifted, a, 10_000) == pytest.approx((welch, "welch-t"))
    # a constant difference: 0 (or 1 when there is none), not NaN
    assert _p_value({0: 0.3, 1: 0.4}, {0: 0.2, 1: 0.3}, 100) == (0.0, "paired-t")
    assert _p_value(a, a, 100) == (1.0, "paired-t")


def test_a_rate_at_the_edge_of_its_grid_is_said():
    assert "0.1 is the largest of the grid" in choose_lr([_row(0.03, 0.3), _row(0.1, 0.2)])[2]
    assert "0.01 is the smallest of the grid" in choose_lr(
        [_row(0.01, 0.1), _row(0.03, 0.2), _row(0.1, 0.3)])[2]
    assert choose_lr([_row(0.01, 0.3), _row(0.03, 0.2), _row(0.1, 0.3)])[2] == ""
    assert choose_lr([_row(0.03, 0.2)])[2] == ""  # a grid of one rate has no edge to speak of


def test_the_grid_widens_one_rung_where_the_chosen_rate_sits_at_its_edge():
    assert glorot2010.next_rate(0.1, up=True) == 0.3 and glorot2010.next_rate(0.03, up=False) == 0.01
    assert glorot2010.next_rate(0.05, up=True) == 0.1  # off the ladder: the next rung
    assert glorot2010.next_rate(1.0, up=True) is None and glorot2010.next_rate(1e-4, up=False) is None
    point = lambda model, lr, seed=0: dict(  # noqa: E731
        dataset="shapeset", arch=f"8x{glorot2010.MODEL_BY_NAME[model].depth}",
        activation=glorot2010.MODEL_BY_NAME[model].activation,
        init=glorot2010.MODEL_BY_NAME[model].init, lr=lr, seed=seed)
    rows = [_row(0.03, 0.3, seed=s) for s in (0, 1)] + [_row(0.1, 0.2, seed=s) for s in (0, 1)]
    rows += [_row(0.01, 0.2, model="Sigmoid"), _row(0.03, 0.3, model="Sigmoid"),
             _row(0.1, 0.3, model="Sigmoid")]
    rows += [_row(0.01, 0.3, model="Tanh"), _row(0.03, 0.2, model="Tanh"), _row(0.1, 0.3, model="Tanh")]
    rows += [_row(0.03, 0.2, model="Softsign"), _row(0.1, 0.1, model="Softsign", status="diverged")]
    rows += [_row(0.03, 0.2, model="Softsign N")]  # one rate: no edge
    # at chance at every rate: the tie goes to the smallest, but there is no direction to widen
    rows += [_row(lr, 0.8326, model="Sigmoid depth 4") for lr in (0.01, 0.03, 0.1)]
    assert grid_edge(rows[-3:]) is None
    assert choose_lr(rows[-3:])[2] == "every rate gives the same validation error (83.26%)"
    points = [point(m, lr, s) for m, lr, s in
              [("Tanh N", 0.03, 0), ("Tanh N", 0.03, 1), ("Tanh N", 0.1, 0), ("Tanh N", 0.1, 1),
               ("Sigmoid", 0.01, 0), ("Sigmoid", 0.03, 0), ("Sigmoid", 0.1, 0),
               ("Tanh", 0.01, 0), ("Tanh", 0.03, 0), ("Tanh", 0.1, 0),
               ("Softsign", 0.03, 0), ("Softsign", 0.1, 0), ("Softsign N", 0.03, 0)]]
    extra = glorot2010.widened(points, rows, grid_edge)
    got = sorted((model_of(p).name, p["lr"], p["seed"]) for p, _ in extra)
    # Tanh N chose the largest rate (both seeds get the rung above), Sigmoid the smallest; Tanh
    # chose inside its grid; Softsign's largest rate diverged: its rung goes below, never above
    assert got == [("Sigmoid", 0.003, 0), ("Softsign", 0.01, 0), ("Tanh N", 0.3, 0),
                   ("Tanh N", 0.3, 1)]
    assert {why for _, why in extra} == {
        "Tanh N on Shapeset-3x2: lr 0.1 is the largest of 0.03, 0.1",
        "Sigmoid on Shapeset-3x2: lr 0.01 is the smallest of 0.01, 0.03, 0.1",
        "Softsign on Shapeset-3x2: lr 0.03 is the smallest of 0.03, 0.1"}
    # once the new rung is worse, the rate is inside the grid and nothing more is added
    rows += [_row(0.3, 0.4, seed=s) for s in (0, 1)] + [_row(0.003, 0.5, model="Sigmoid"),
                                                         _row(0.01, 0.5, model="Softsign")]
    assert glorot2010.widened(points + [p for p, _ in extra], rows, grid_edge) == []
    assert all(b.widen >= 1 for n, b in glorot2010.BUDGETS.items() if n != "smoke")


def test_each_budget_names_its_shapeset_stream():
    # the published budgets keep the stream of their published results; the others draw the
    # counter stream (the GPU renders it)
    for name, stream in (("smoke", "counter"), ("quick", "sequential"), ("long", "sequential"),
                         ("paper", "counter")):
        budget = glorot2010.BUDGETS[name]
        points = glorot2010.points(budget, ["shapeset", "mnist"], 1)
        assert {p["data_options"]["generator"] for p in points if p["dataset"] == "shapeset"} \
            == {stream}, name
        assert all("data_options" not in p for p in points if p["dataset"] == "mnist")


def test_pairwise_p_values_check_the_captions_wording(tmp_path):
    from fastff.reproduction.table import pairwise, write_table
    n = 10_000
    hard = np.random.default_rng(3).permutation(n)

    def setup(spans):
        """Each model wrong on hard[start:stop]: overlapping spans, paired outcomes."""
        rows = [_row(0.1, 0.2, test=(stop - start) / n, model=m) for m, (start, stop) in spans.items()]
        kept = {}
        for m, (start, stop) in spans.items():
            kept[m] = np.ones(n, bool)
            kept[m][hard[start:stop]] = False
        outcomes = lambda row: kept[model_of(row).name]  # noqa: E731
        table = table1(rows, ["shapeset"], {"shapeset": n}, outcomes=outcomes)
        return table, pairwise(rows, table, {"shapeset": n}, outcomes)

    # Tanh N best; Softsign N 100 vs 140 discordant from it (p = 0.012: bold); Softsign and
    # Tanh clearly worse than both
    table, pairs = setup({"Tanh N": (0, 1500), "Softsign N": (100, 1640), "Softsign": (300, 2000),
                          "Tanh": (0, 2500)})
    assert len(pairs) == 6 and {p["test"] for p in pairs} == {"mcnemar-exact"}
    assert {r["model"]: r["bold"] for r in table if r["test_error"] != ""} == {
        "Tanh N": True, "Softsign N": True, "Softsign": False, "Tanh": False}
    by = {(p["model_a"], p["model_b"]): p for p in pairs}
    assert by[("Softsign", "Softsign N")]["differ"] == "yes"
    assert by[("Softsign N", "Tanh N")]["differ"] == ""  # both bold: the caption is silent
    md = write_table(tmp_path, table, glorot2010.BUDGETS["smoke"], pairs=pairs)
    assert "p-values of every pair" in md and "holds on all 4 bold/non-bold pairs" in md
    assert len(list(csv.DictReader(open(tmp_path / "pairwise.csv")))) == 6
    # Softsign different from the best (p = 3e-4) but not from Softsign N, which is bold
    # (p = 0.012): "bold results differ significantly from non-bold ones" fails there
    table, pairs = setup({"Tanh N": (0, 1500), "Softsign N": (100, 1640), "Softsign": (200, 1780),
                          "Tanh": (0, 2500)})
    assert {r["model"]: r["bold"] for r in table}["Softsign"] is False
    by = {(p["model_a"], p["model_b"]): p for p in pairs}
    assert by[("Softsign", "Softsign N")]["differ"] == "no"
    md = write_table(tmp_path, table, glorot2010.BUDGETS["smoke"], pairs=pairs)
    assert "fails on 1 of 4 bold/non-bold pairs: Softsign vs Softsign N (p = 0.012)" in md


def test_the_long_budget_and_its_estimate(tmp_path):
    from fastff.reproduction.estimate import estimate, remaining
    budget = glorot2010.BUDGETS["long"]
    points = glorot2010.points(budget, ["shapeset", "mnist"], 1)
    assert len(points) == 24 and {p["updates"] for p in points} == {200_000, 60_000}
    assert {p["lr"] for p in points if p["dataset"] == "shapeset"} == {0.01, 0.03}
    assert all("data_seed" not in p for p in points)  # one seed: the data seed is the seed
    seeded = glorot2010.points(budget, ["mnist", "shapeset"], 3)  # each seed its own stream
    assert [p["seed"] for p in seeded[:3]] == [0, 1, 2] and all("data_seed" not in p for p in seeded)
    assert {p["data_options"].get("eval_seed") for p in seeded if p["dataset"] == "shapeset"} \
        == {None, 0}  # seed 0's point is the one-seed run's; the others take its test set
    # the estimate counts what is left: a finished run is not, an unfinished one from its
    # last evaluation
    import fastff
    from fastff.sweeps import run_name, varying
    small = [dict(p, arch="16x2", updates=1000, eval_every=100, monitor_every=0,
                  data_options=dict(valid_size=100, test_size=100)) for p in points[:3]]
    names = [run_name(p, varying(small)) for p in small]
    (tmp_path / names[0]).mkdir()
    (tmp_path / names[0] / "sweep_status.json").write_text(json.dumps(
        {"status": "done", "point": small[0]}))
    fastff.train(**dict(small[1], updates=400), out_dir=tmp_path / names[1], progress=False)
    assert [u for _, u in remaining(small, tmp_path)] == [600, 1000]
    text, hours, workers = estimate(small, tmp_path, {"shapeset": (1024, 9)}, workers=1,
                                    budget=budget)
    assert text.startswith("estimate: 2 of 3 runs to train, 1,600 updates;") and workers == 1
    # the chosen rates' seeds are counted before the rates are known: 2 more per seeded model
    # on Shapeset, 4 on MNIST
    from fastff.reproduction.estimate import seed_runs
    extra = seed_runs(points, tmp_path, budget.chosen_seeds)
    assert len(extra) == 4 * 2 + 4 * 4 and {p["seed"] for p, _ in extra} == {1, 2, 3, 4}
    assert "with evaluations, monitoring and checkpoints, the training loop" in text
    # the loop around the step and a run's setup, timed on short real runs of Shapeset's net
    loop = re.search(r"shapeset ([\d.]+) ms an update, ([\d.]+) s a run\) and a worker's "
                     r"first run \((\d+) s\)", text)
    assert loop and int(loop.group(3)) >= 1  # a fresh process imports and loads kernels
    assert "1024-16-16-9 at batch 10" in text and hours > 0
    assert re.search(r"\(\d threads?, alone\)", text)
    # several workers: timed stepping at once, in as many processes
    from fastff.reproduction.estimate import steps_at_once
    assert 0 < steps_at_once([1024, 16, 16, 9], 10, 1, 2, seconds=0.2) < 0.1


def _comparison(diff, p, low=None, high=None, eq=None, seeds=3):
    low = diff - 1 if low is None else low
    high = diff + 1 if high is None else high
    eq_low, eq_high = eq if eq is not None else (low + 0.2, high - 0.2)
    return dict(diff=diff, low=low, high=high, eq_low=eq_low, eq_high=eq_high, p=p,
                test=f"paired t over {seeds} seeds", p_pooled=p / 10, seeds=seeds)


def test_claims_have_three_verdicts_and_the_paper_s_direction():
    from fastff.reproduction.claims import _sequential, margin, table_claims
    assert _sequential([1000, 2000, 2000, None, None]) and not _sequential([None, 1000, None])
    assert not _sequential([2000, 1000, None]) and not _sequential([1000, None, 3000])
    table = [dict(dataset="shapeset", model=m, test_error=e) for m, e in
             (("Tanh N", 50.0), ("Tanh", 60.0), ("Softsign N", 55.0), ("Softsign", 55.5),
              ("Sigmoid", 83.4))]
    found = {("Tanh N", "Tanh"): _comparison(-10.0, 1e-4),
             ("Softsign N", "Softsign"): _comparison(-0.5, 0.3, eq=(-2.0, 1.0)),
             ("Sigmoid", "Tanh"): _comparison(23.4, 1e-30)}
    compare = lambda d, a, b: found.get((a, b))  # noqa: E731
    rows = {r["claim"]: r for r in table_claims(table, compare)}
    tanh = rows["Shapeset-3x2: normalized init beats standard init for tanh"]
    assert tanh["verdict"] == "agrees" and "paired t over 3 seeds" in tanh["fastff"]
    assert "pooled over the seeds' test outcomes p = 1e-05 (CMH)" in tanh["fastff"]
    soft = rows["Shapeset-3x2: softsign is robust to the initialization"]
    delta = margin("shapeset", 55.0, 55.5)  # a quarter of 54.0% of 55.25: 7.46 points
    assert 7.4 < delta < 7.5 and soft["verdict"] == "agrees" and f"±{delta:.2f}" in soft["test"]
    worst = rows["Shapeset-3x2: the 5-layer sigmoid net is the worst of Table 1's models"]
    assert worst["verdict"] == "agrees in rank only" and "never left chance" in worst["fastff"]
    # the right direction without significance is inconclusive; the wrong one disagrees
    found[("Tanh N", "Tanh")] = _comparison(-10.0, 0.01)
    assert table_claims(table, compare)[0]["verdict"] == "inconclusive"
    found[("Tanh N", "Tanh")] = _comparison(3.0, 1e-5)
    assert table_claims(table, compare)[0]["verdict"] == "disagrees"
    # no difference is never agreement by itself: an interval wider than the margin is
    # inconclusive, one wholly beyond it disagrees
    found[("Softsign N", "Softsign")] = _comparison(-0.5, 0.6, eq=(-9.0, 6.0))
    assert table_claims(table, compare)[1]["verdict"] == "inconclusive"
    found[("Softsign N", "Softsign")] = _comparison(-10.0, 1e-9, eq=(-12.0, -8.0))
    assert table_claims(table, compare)[1]["verdict"] == "disagrees"
    # a sigmoid that left chance and is worst agrees; missing runs say so
    table[-1]["test_error"] = 70.0
    assert table_claims(table, compare)[2]["verdict"] == "agrees"
    assert table_claims(table[1:], compare)[0]["verdict"].startswith("n/a")


def test_comparisons_over_seeds_and_on_one_seed():
    from fastff.reproduction.table import comparison
    rng = np.random.default_rng(0)
    truth = rng.random(2000) < 0.5
    kept = {}
    rows = []
    for seed in range(3):
        for model, flip in (("Tanh N", 0.10), ("Tanh", 0.30)):  # Tanh N right more often
            correct = np.where(rng.random(2000) < flip, ~truth, truth) == truth
            name = f"{model}-{seed}"
            kept[name] = correct
            rows.append(dict(_row(0.01, 0.2, test=1 - correct.mean(), seed=seed, model=model),
                             name=name))
    outcomes = lambda r: kept[r["name"]]  # noqa: E731
    c = comparison(rows, "shapeset", "Tanh N", "Tanh", outcomes)
    assert c["seeds"] == 3 and c["test"] == "paired t over 3 seeds"
    assert -25 < c["low"] < c["diff"] < c["high"] < -15 and c["p"] < 0.005
    assert c["eq_low"] > c["low"] and c["eq_high"] < c["high"]  # 99% inside 99.5%
    assert c["p_pooled"] < 1e-100  # 3 x 2000 matched pairs
    one = comparison([r for r in rows if r["seed"] == 0], "shapeset", "Tanh N", "Tanh", outcomes)
    assert one["test"] == "McNemar, one seed" and one["p"] == one["p_pooled"]
    assert one["low"] < one["diff"] < one["high"]
    assert comparison(rows, "shapeset", "Tanh N", "Softsign", outcomes) is None


def test_one_seed_uses_fisher_exact_on_the_test_counts():
    rows = [_row(0.1, 0.2, test=0.150, model="Tanh N"), _row(0.1, 0.2, test=0.160, model="Softsign"),
            _row(0.1, 0.3, test=0.300, model="Tanh")]
    table = {r["model"]: r for r in table1(rows, ["shapeset"], {"shapeset": 5000})}
    assert table["Softsign"]["test"] == "fisher-exact" and table["Softsign"]["bold"]  # p ~ 0.18
    assert not table["Tanh"]["bold"] and table["Tanh"]["p_vs_best"] < 1e-6
    assert table["Sigmoid"]["test_error"] == "" and table["Sigmoid"]["note"] == "no runs"


def _paired_outcomes(n, wrong_a, wrong_b, shared):
    """Outcomes of two models on n examples: wrong_a and wrong_b errors, shared of them common."""
    a, b = np.ones(n, bool), np.ones(n, bool)
    a[:wrong_a] = False
    b[:shared] = False
    b[wrong_a:wrong_a + wrong_b - shared] = False
    return a, b


def test_mcnemar_on_paired_outcomes_sees_what_fisher_misses():
    from scipy import stats
    from fastff.reproduction.table import mcnemar_exact
    # the paper's Table 1 Tanh N and Softsign N on Shapeset as counts of 10,000 (15.60%, 16.06%),
    # 1,450 errors shared: 110 examples only Tanh N gets wrong, 156 only Softsign N
    a, b = _paired_outcomes(10_000, 1560, 1606, 1450)
    assert (~a).sum() == 1560 and (~b).sum() == 1606 and (~a & ~b).sum() == 1450
    assert mcnemar_exact(a, b) == pytest.approx(0.0057, abs=5e-4)
    assert stats.fisher_exact([[1560, 8440], [1606, 8394]]).pvalue == pytest.approx(0.38, abs=0.01)
    assert mcnemar_exact(a, a) == 1.0 and mcnemar_exact(b, a) == mcnemar_exact(a, b)
    # no real difference, two models right or wrong together on most examples (paired):
    # McNemar rejects at about the level asked for, Fisher almost never
    rng = np.random.default_rng(7)
    hard = rng.random((400, 2000)) < 0.2
    flip = lambda: rng.random((400, 2000)) < 0.05  # noqa: E731
    pairs = [(~(h ^ f), ~(h ^ g)) for h, f, g in zip(hard, flip(), flip())]
    m = [mcnemar_exact(a, b) < 0.05 for a, b in pairs]
    f = [stats.fisher_exact([[(~a).sum(), a.sum()], [(~b).sum(), b.sum()]]).pvalue < 0.05
         for a, b in pairs]
    assert 0.02 <= np.mean(m) <= 0.08 and np.mean(f) <= 0.01


def test_one_seed_with_recorded_outcomes_uses_mcnemar():
    rows = [_row(0.1, 0.2, test=0.156, model="Tanh N"), _row(0.1, 0.2, test=0.1606, model="Softsign")]
    a, b = _paired_outcomes(10_000, 1560, 1606, 1450)
    kept = {"Tanh N": a, "Softsign": b}
    table = {r["model"]: r for r in table1(rows, ["shapeset"], {"shapeset": 10_000},
                                           outcomes=lambda row: kept[model_of(row).name])}
    soft = table["Softsign"]
    assert soft["test"] == "mcnemar-exact" and soft["bold"]  # p = 0.0057 >= 0.005: still bold
    assert soft["p_vs_best"] == pytest.approx(0.0057, abs=5e-4)
    fisher = {r["model"]: r for r in table1(rows, ["shapeset"], {"shapeset": 10_000})}
    assert fisher["Softsign"]["test"] == "fisher-exact" and fisher["Softsign"]["p_vs_best"] > 0.3


def test_bad_arguments_are_refused(tmp_path):
    for kwargs, match in ((dict(paper="glorot2011"), "unknown paper"),
                          (dict(budget="huge"), "unknown budget"),
                          (dict(datasets="shapeset,imagenet"), "unknown dataset 'imagenet'"),
                          (dict(datasets=""), "no datasets"),
                          (dict(seeds=0), "seeds must be a positive integer")):
        with pytest.raises(InputError, match=match):
            reproduce(**{"out_dir": tmp_path / "r", **kwargs}, progress=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="not a directory"):
        reproduce(budget="smoke", out_dir=tmp_path / "file", progress=False)


def test_smoke_budget_end_to_end(tmp_path, capsys):
    out = tmp_path / "repro"
    assert main(["reproduce", "glorot2010", "--budget", "smoke", "--out", str(out),
                 "--datasets", "shapeset,mnist,small_imagenet", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| Tanh N |" in printed and "wrote" in printed
    table = list(csv.DictReader(open(out / "table1.csv")))
    assert len(table) == 18
    assert {r["dataset"] for r in table} == {"shapeset", "mnist", "small_imagenet"}
    for r in table:
        if r["dataset"] == "small_imagenet":  # no file: skipped with a note, not an error
            assert r["note"].startswith("skipped: Small-ImageNet") and r["test_error"] == ""
        else:
            assert float(r["lr"]) in (0.03, 0.1) and r["updates"] == "300"
            assert 0 <= float(r["test_error"]) <= 100 and r["bold"] in ("True", "False")
    runs = list(csv.DictReader(open(out / "runs" / "runs.csv")))
    assert len(runs) == 24 and {r["status"] for r in runs} == {"done"}
    assert {r["arch"] for r in runs} == {"32x5", "32x4"}
    # every figure the issue names, drawn from the right runs
    for name in ("fig02_sigmoid4_activation_mean_std.png", "fig03_tanh_softsign_activation_p98_std.png",
                 "fig04_tanh_softsign_activation_hist_end.png", "fig06_activation_hist_init.png",
                 "fig07_backprop_grad_hist_init.png", "fig08_weight_grad_hist_init.png",
                 "fig09_weight_grad_std_training.png", "fig10_tanh_n_activation_p98_std.png",
                 "fig11_shapeset_test_error.png", "fig12_mnist_cifar10_test_error.png"):
        assert (out / name).stat().st_size > 10_000, name
    page = (out / "index.html").read_text()
    assert "fig11_shapeset_test_error.png" in page and "15.60" in page and "Small-ImageNet skipped" in page
    # every claim judged from these runs (narrow nets: whatever the verdicts, each is one)
    claims = list(csv.DictReader(open(out / "claims.csv")))
    assert len(claims) == 6 + 9 and "The paper's claims" in page
    assert all(c["verdict"] in ("agrees", "disagrees", "inconclusive", "agrees in rank only")
               for c in claims), claims
    jac = [c for c in claims if c["source"].startswith("§4.2.2")][0]
    assert re.match(r"Tanh: [\d., ]+; Tanh N: [\d., ]+$", jac["fastff"])
    rows = [dict(r, lr=float(r["lr"])) for r in runs]
    tab = [dict(r, lr=float(r["lr"]) if r["lr"] else "") for r in table]
    fig2 = chosen_runs(rows, tab, "shapeset")["Sigmoid depth 4"]
    config = json.loads((out / "runs" / fig2 / "config.json").read_text())
    assert (config["activation"], config["init"], len(config["arch"])) == ("sigmoid", "standard", 6)
    # run again: nothing is retrained, the table is the same
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/checkpoint.npz")}
    again = reproduce("glorot2010", budget="smoke", out_dir=out,
                      datasets=["shapeset", "mnist", "small_imagenet"], progress=False)
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob("runs/*/checkpoint.npz")}
    assert [r["test_error"] for r in again.table] == [
        float(r["test_error"]) if r["test_error"] else "" for r in table]
    # widening: a smoke grid has two rates, so each chosen rate sits at an edge; one round adds
    # the rung beyond it for each model (12 runs), trains only those, and chooses again
    wide = reproduce("glorot2010", budget="smoke", out_dir=out, widen=1,
                     datasets=["shapeset", "mnist", "small_imagenet"], progress=False)
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob("runs/*/checkpoint.npz")
                      if p in stamps}
    assert {r["status"] for r in wide.runs} == {"done"}
    widened = 0
    for row in (r for r in wide.table if r["dataset"] != "small_imagenet"):
        lrs = {float(r["lr"]) for r in wide.runs
               if r["dataset"] == row["dataset"] and model_of(r).name == row["model"]}
        edge = grid_edge([r for r in runs if r["dataset"] == row["dataset"]
                          and model_of(r).name == row["model"]])
        beyond = {"largest": {0.3}, "smallest": {0.01}, None: set()}[edge]
        assert lrs == {0.03, 0.1} | beyond and row["lr"] in lrs
        widened += len(beyond)
    assert widened >= 6 and len(wide.runs) == 24 + widened
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/checkpoint.npz")}
    # --no-train: the results of the runs finished so far; here the Shapeset sigmoids are not
    unfinished = [r["name"] for r in runs
                  if r["dataset"] == "shapeset" and r["activation"] == "sigmoid"]
    assert len(unfinished) == 4
    for name in unfinished:
        (out / "runs" / name / "sweep_status.json").unlink()
    capsys.readouterr()
    assert main(["reproduce", "glorot2010", "--budget", "smoke", "--out", str(out),
                 "--datasets", "shapeset,mnist,small_imagenet", "--no-train"]) == 0
    assert "20 of 24 runs finished; nothing trained" in capsys.readouterr().out
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob("runs/*/checkpoint.npz")}
    partial = {(r["dataset"], r["model"]): r for r in csv.DictReader(open(out / "table1.csv"))}
    for model in ("Sigmoid", "Sigmoid depth 4"):
        row = partial[("shapeset", model)]
        assert row["test_error"] == "" and "2 of 2 runs unfinished" not in row["note"]
        assert "unfinished" in row["note"], row
    assert partial[("shapeset", "Tanh N")]["test_error"] != ""
    assert partial[("mnist", "Sigmoid")]["test_error"] != ""
    # a folder holds one reproduction
    with pytest.raises(InputError, match="budget 'smoke'"):
        reproduce("glorot2010", budget="quick", out_dir=out, datasets="shapeset", progress=False)


def test_every_run_belongs_to_one_model():
    models = glorot2010.MODELS + glorot2010.EXPERIMENT_MODELS
    assert len({glorot2010.model_of(_row(0.1, 0.2, model=m.name)) for m in models}) == len(models)
    for m in models:
        assert glorot2010.model_of(_row(0.1, 0.2, model=m.name)) == m
    # a runs.csv row leaves the arguments a point does not have empty
    assert glorot2010.model_of(dict(_row(0.1, 0.2), pretrain="", loss="", data_options="",
                                    optimizer="")) == glorot2010.MODEL_BY_NAME["Tanh N"]
    budget = glorot2010.BUDGETS["quick"]
    points = glorot2010.points(budget, ["shapeset", "mnist"], 1, experiments=glorot2010.EXPERIMENTS)
    on_mnist = [p for p in points if p["dataset"] == "mnist"]
    assert len(on_mnist) == 6 * 2 and all("pretrain" not in p for p in on_mnist)
    rates = [p for p in points if "optimizer" in p]
    assert len(points) - len(on_mnist) - len(rates) == 10 * 3
    assert len(rates) == 4 * len(budget.rate_lrs) and {p["lr"] for p in rates} == set(budget.rate_lrs)
    assert {p["optimizer"] for p in rates} == {"diag_hessian", "grad_variance"}
    finite = [p for p in points if p.get("data_options", {}).get("finite")]
    assert len(finite) == 3 and {p["data_options"]["finite"] for p in finite} == {100_000}
    assert {p["pretrain_updates"] for p in points if "pretrain" in p} == {budget.pretrain_updates}


def test_experiments_are_compared_with_the_papers_models():
    rows = [_row(0.1, 0.20, test=0.150, model="Tanh N"), _row(0.1, 0.3, test=0.40, model="Tanh"),
            _row(0.1, 0.80, test=0.83, model="Sigmoid depth 4"),
            _row(0.1, 0.10, test=0.120, model="Tanh pre-trained"),
            _row(0.03, 0.12, test=0.100, model="Tanh pre-trained"),  # higher valid: not chosen
            _row(0.1, 0.25, test=0.300, model="Tanh N, quadratic cost"),
            _row(0.1, 0.50, test=0.500, model="Tanh N, finite set"),
            _row(0.1, 0.35, test=0.350, model="Tanh, diagonal Hessian rates")]
    table = table1(rows, ["shapeset"], {"shapeset": 5000})
    svm = dict(method="nystroem", n_components=2000, n_train=100_000, C=1.0, gamma=0.01,
               valid_error=0.6, test_error=0.59, seconds=300.0, grid=[])
    exp = {r["model"]: r for r in experiments_table(rows, table, 5000, svm,
                                                    {"Tanh pre-trained": "ends lowest"})}
    assert set(exp) == {"RBF SVM", "Tanh pre-trained", "Tanh N, quadratic cost",
                        "Tanh N, finite set", "Tanh, diagonal Hessian rates"}  # no runs: left out
    pre = exp["Tanh pre-trained"]
    assert (pre["lr"], pre["test_error"], pre["compared_with"], pre["compared_test_error"]) == (
        0.1, 12.0, "Tanh N", 15.0)
    assert pre["test"] == "fisher-exact" and pre["p_value"] < 1e-4 and pre["measured"] == "ends lowest"
    fin = exp["Tanh N, finite set"]
    assert (fin["compared_with"], fin["compared_test_error"], fin["paper_test_error"]) == (
        "RBF SVM", 59.0, 50.47)
    assert exp["RBF SVM"]["paper_test_error"] == 59.47 and "2000 Nystroem" in exp["RBF SVM"]["note"]
    assert exp["Tanh N, quadratic cost"]["p_value"] < 1e-6
    rates = exp["Tanh, diagonal Hessian rates"]
    assert (rates["experiment"], rates["compared_with"], rates["compared_test_error"]) == (
        "second_order", "Tanh", 40.0)


def test_bad_experiments_are_refused(tmp_path):
    for value, match in (("table2", "unknown experiment 'table2'"), ("", "no experiments")):
        with pytest.raises(InputError, match=match):
            reproduce(out_dir=tmp_path / "r", experiments=value, progress=False)


def test_other_experiments_end_to_end(tmp_path, capsys):
    out = tmp_path / "repro"
    assert main(["reproduce", "glorot2010", "--budget", "smoke", "--out", str(out),
                 "--datasets", "shapeset", "--experiments", "all", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| pretrain | Tanh pre-trained |" in printed and "experiments.md" in printed
    exp = {r["model"]: r for r in csv.DictReader(open(out / "experiments.csv"))}
    assert set(exp) == {"RBF SVM", "Tanh pre-trained", "Sigmoid depth 4 pre-trained",
                        "Tanh N, quadratic cost", "Tanh N, finite set",
                        "Tanh, diagonal Hessian rates", "Tanh, gradient-variance rates",
                        "Tanh N, diagonal Hessian rates", "Tanh N, gradient-variance rates"}
    assert "exact SVC, 2,000 examples" in exp["RBF SVM"]["note"]
    assert exp["Sigmoid depth 4 pre-trained"]["measured"].startswith("top layer's final mean")
    assert re.match(r"ends (lowest|#\d) of 7", exp["Tanh pre-trained"]["measured"])
    assert re.match(r"Tanh N: \d+\.\d\d$", exp["Tanh, gradient-variance rates"]["measured"])
    runs = list(csv.DictReader(open(out / "runs" / "runs.csv")))
    assert len(runs) == 14 * 2 and {r["status"] for r in runs} == {"done"}
    rated = [r for r in runs if r["optimizer"]]
    assert len(rated) == 8 and all(
        np.load(out / "runs" / r["name"] / "checkpoint.npz")["rates_steps"].tolist() == [300] * 6
        for r in rated)
    pre = [r for r in runs if r["pretrain"] == "dae"]
    assert len(pre) == 4 and all((out / "runs" / r["name"] / "pretrain.csv").is_file() for r in pre)
    assert (out / "fig02b_pretrained_sigmoid4_activation_mean_std.png").stat().st_size > 10_000
    assert (out / "second_order_test_error.png").stat().st_size > 10_000
    assert "The paper's other experiments" in (out / "index.html").read_text()
    # run again: neither the nets nor the SVM are trained again
    svm_stamp = (out / "svm.json").stat().st_mtime_ns
    again = reproduce("glorot2010", budget="smoke", out_dir=out, datasets="shapeset",
                      experiments="all", progress=False)
    assert (out / "svm.json").stat().st_mtime_ns == svm_stamp
    assert [r["test_error"] for r in again.experiments] == [
        float(exp[r["model"]]["test_error"]) for r in again.experiments]
    # --no-train reads the fitted SVM back too
    shown = reproduce("glorot2010", budget="smoke", out_dir=out, datasets="shapeset",
                      experiments="all", progress=False, train=False)
    assert [r["test_error"] for r in shown.experiments] == [r["test_error"] for r in again.experiments]
    assert (out / "svm.json").stat().st_mtime_ns == svm_stamp


def test_a_reproduction_on_a_missing_gpu_says_so(tmp_path):
    from fastff.device import cuda_status
    import fastff
    if cuda_status()[0]:
        pytest.skip("a GPU is usable here")
    with pytest.raises(fastff.DeviceError):
        reproduce(budget="smoke", out_dir=tmp_path / "r", datasets="shapeset", device="cuda",
                  progress=False)
    assert not (tmp_path / "r").exists()  # nothing written


def test_an_unfinished_rung_does_not_hide_the_edge():
    # 0.1 is a widening rung still running: until it finishes, 0.03 is the edge of what is known
    runs = [_row(0.01, 0.3), _row(0.03, 0.2), _row(0.1, "", status="")]
    assert grid_edge(runs) == "largest"
    assert "lr 0.03 is the largest of the grid" in choose_lr(runs)[2]
    assert grid_edge([_row(0.01, 0.3), _row(0.03, 0.2), _row(0.1, 0.25)]) is None
    # a rung that diverged settles the edge: the chosen rate is where the grid can grow no more
    assert grid_edge([_row(0.01, 0.3), _row(0.03, 0.2), _row(0.1, "", status="diverged")]) is None


def test_the_chosen_rate_s_extra_seeds_do_not_weigh_in_its_choice():
    runs = [_row(0.01, 0.30), _row(0.03, 0.20), _row(0.1, 0.35),
            _row(0.03, 0.40, seed=1), _row(0.03, 0.42, seed=2)]  # seeds of the chosen rate
    lr, chosen, note = choose_lr(runs)
    assert lr == 0.03 and sorted(r["seed"] for r in chosen) == [0, 1, 2] and note == ""
    runs[-1].update(status="diverged", valid_error="")
    lr, chosen, note = choose_lr(runs)
    assert lr == 0.03 and len(chosen) == 2 and note == "lr 0.03: seed 2 (diverged) left out"


def test_the_chosen_rates_of_the_symmetric_models_get_the_budget_s_seeds():
    budget = glorot2010.BUDGETS["long"]
    assert budget.chosen_seeds == {"shapeset": 3, "mnist": 5}
    points = glorot2010.points(budget, ["shapeset", "mnist"], 1)
    assert len(points) == 24 and all(p["seed"] == 0 and "data_seed" not in p for p in points)
    rows = []
    for p in points:
        model = glorot2010.model_of(p).name
        lr = float(p["lr"])
        valid = 0.2 if (lr == 0.01) == model.endswith("N") else 0.3  # N chooses 0.01/0.03
        rows.append(_row(lr, valid, dataset=p["dataset"], model=model))
    extra = glorot2010.seeded(points, rows, choose_lr, budget.chosen_seeds)
    # 4 symmetric models: 2 more seeds on Shapeset, 4 more on MNIST, at the chosen rate only
    assert len(extra) == 4 * 2 + 4 * 4
    for p in extra:
        model = glorot2010.model_of(p)
        assert model.name in glorot2010.SEEDED_MODELS and p["seed"] >= 1
        assert "data_seed" not in p  # each seed its own stream ...
        if p["dataset"] == "shapeset":  # ... and the test set of seed 0
            assert p["data_options"]["eval_seed"] == 0
            assert p["lr"] == (0.01 if model.name.endswith("N") else 0.03)
    # planned already: nothing again
    assert glorot2010.seeded(points + extra, rows, choose_lr, budget.chosen_seeds) == []


def test_seeds_share_the_shapeset_test_set_and_not_the_stream():
    a = fastff.data.load("shapeset", seed=0, valid_size=20, test_size=20)
    b = fastff.data.load("shapeset", seed=2, valid_size=20, test_size=20, eval_seed=0)
    np.testing.assert_array_equal(a.test[0], b.test[0])
    np.testing.assert_array_equal(a.valid[1], b.valid[1])
    assert not np.array_equal(a.train_batch(0, 10)[0], b.train_batch(0, 10)[0])


def test_a_reproduction_gives_the_chosen_rates_their_seeds(tmp_path, monkeypatch):
    import dataclasses
    smoke = dataclasses.replace(glorot2010.BUDGETS["smoke"], chosen_seeds={"shapeset": 2})
    monkeypatch.setitem(glorot2010.BUDGETS, "smoke", smoke)
    result = reproduce(budget="smoke", out_dir=tmp_path, datasets="shapeset", progress=False,
                       workers=1)
    runs = result.runs
    assert len(runs) == 6 * 2 + 4 and all(r["status"] in ("done", "diverged") for r in runs)
    rows = {r["model"]: r for r in result.table}
    for name in glorot2010.SEEDED_MODELS:
        assert rows[name]["seeds"] == 2 and rows[name]["test_error_std"] != ""
        two = [r for r in runs if model_of(r).name == name and float(r["lr"]) == rows[name]["lr"]]
        assert sorted(int(r["seed"]) for r in two) == [0, 1]
    assert rows["Sigmoid"]["seeds"] == 1
    # --no-train gives the same table from the records
    again = reproduce(budget="smoke", out_dir=tmp_path, datasets="shapeset", progress=False,
                      train=False)
    assert again.table == result.table


def test_the_estimate_counts_evaluations_monitoring_and_checkpoints():
    from fastff.reproduction.estimate import makespan, run_seconds
    costs = dict(example=1e-5, snapshot=0.5, jacobian=2.0, checkpoint=0.1)
    point = dict(updates=1000, eval_every=100, monitor_every=250)
    # from update 0: 1000 steps, 11 evaluations of 20,000 examples with a checkpoint each,
    # 4 snapshots and update 0's with the Jacobians
    assert run_seconds(point, 1000, 1e-3, costs, 20_000) == pytest.approx(
        1.0 + 11 * (0.2 + 0.1) + 4 * 0.5 + 2.0)
    # resumed at update 600: 400 steps, 4 evaluations, 2 snapshots, no Jacobians
    assert run_seconds(point, 400, 1e-3, costs, 20_000) == pytest.approx(
        0.4 + 4 * 0.3 + 2 * 0.5)
    # a run's setup (its datasets, model and record) once, wherever it starts
    assert run_seconds(point, 400, 1e-3, costs, 20_000, setup=3.0) == pytest.approx(
        3.4 + 4 * 0.3 + 2 * 0.5)
    assert makespan([5, 4, 3, 3, 1], 2) == 8 and makespan([5, 4], 1) == 9


def test_the_estimate_bounds_widening_beside_its_hours(tmp_path):
    from fastff.reproduction.estimate import estimate
    point = dict(dataset="shapeset", arch="16x2", activation="tanh", init="normalized",
                 lr=0.01, updates=50_000_000, eval_every=10_000_000, monitor_every=0, seed=0,
                 data_options=dict(valid_size=200, test_size=300))
    deeper = dict(point, arch="16x3")
    points = [point, dict(point, lr=0.03), deeper]
    # the deeper model's run is finished: not in the hours, but a rung of it may still come
    from fastff.sweeps import run_name, varying
    done = tmp_path / run_name(deeper, varying(points))
    done.mkdir()
    (done / "sweep_status.json").write_text(json.dumps({"status": "done", "point": deeper}))
    text, hours, _ = estimate(points, tmp_path, {"shapeset": (1024, 9)}, workers=1, widen=2)
    assert text.startswith("estimate: 2 of 3 runs to train")
    # one more run per model: 4 runs of about the same length on one worker against 2, the
    # deeper model's net timed for its rung alone
    bound = float(re.search(r"with one each, about ([\d.]+) h", text).group(1))
    assert "(up to 2 rounds)" in text and 1.5 * hours < bound < 2.8 * hours
    assert "1024-16-16-16-9 at batch 10" in text


class _Snapshots:
    """The part of fastff.monitor.Stats the per-layer claims read: updates and scalars."""

    def __init__(self, updates, **scalars):
        self.updates = np.asarray(updates)
        self._scalars = {k: np.asarray(v, np.float64) for k, v in scalars.items()}

    def __len__(self):
        return len(self.updates)

    def scalar(self, name):
        return self._scalars[name]


def _run_with(updates, **scalars):
    import types
    return types.SimpleNamespace(stats=_Snapshots(updates, **scalars))


def test_fig10_is_judged_against_tanh_at_the_same_updates():
    from fastff.reproduction.claims import _less_saturated
    updates = [0, 10, 20, 30]
    tanh = _run_with(updates, act_p98=[[.5] * 5, [.995, .9, .8, .7, .6], [.995, .995, .9, .8, .7],
                                       [.995, .995, .995, .9, .8]])
    calm = _run_with(updates, act_p98=[[.5] * 5, [.9] * 5, [.95] * 5, [.995, .9, .9, .9, .9]])
    assert _less_saturated(calm, tanh, "Tanh N", "Fig. 10", "")["verdict"] == "agrees"
    # every layer saturated as in the published long run: not what Fig. 10 shows
    saturated = _run_with(updates, act_p98=[[.5] * 5, [.9] * 5, [.995] * 5, [.995] * 5])
    row = _less_saturated(saturated, tanh, "Tanh N", "Fig. 10", "")
    assert row["verdict"] == "disagrees" and "fewer saturated layers at 1 of the 3" in row["fastff"]
    # tanh never saturating within the run gives nothing to compare against
    never = _run_with(updates, act_p98=[[.5] * 5] * 4)
    assert _less_saturated(calm, never, "Tanh N", "Fig. 10", "")["verdict"] == "inconclusive"


def test_figs_6_to_8_at_initialization():
    from fastff.reproduction.claims import _at_init
    # measured at update 0 on Shapeset's 5x1000 nets (seed 0)
    tanh = _run_with([0], act_std=[[.2906, .165, .0927, .0541, .0315]],
                     delta_std=[[.002, .0034, .006, .0104, .0174]],
                     grad_w_std=[[1.474e-4, 1.435e-4, 1.446e-4, 1.389e-4, 1.432e-4]])
    tanh_n = _run_with([0], act_std=[[.4355, .3741, .324, .297, .2764]],
                       delta_std=[[.025, .030, .034, .036, .039]],
                       grad_w_std=[[2.28e-3, 2.12e-3, 2.18e-3, 2.11e-3, 2.14e-3]])
    fig6, fig7, fig8 = _at_init(tanh, tanh_n)
    assert [fig6["verdict"], fig7["verdict"], fig8["verdict"]] == ["agrees"] * 3
    assert "ratio 0.57" in fig6["fastff"] and "ratio 0.89" in fig6["fastff"]
    fig6, fig7, fig8 = _at_init(tanh_n, tanh)  # the inits swapped: none holds
    assert [fig6["verdict"], fig7["verdict"]] == ["disagrees"] * 2
    assert _at_init(None, tanh_n)[0]["verdict"].startswith("n/a")


def _regenerated(published, tmp_path):
    """A published folder copied and regenerated with --no-train: {file: (published bytes,
    regenerated bytes)} of the files a regeneration must give again."""
    import shutil
    from fastff.reproduction.publish import REGENERATED
    plan = json.loads((published / "reproduction.json").read_text())
    copy = tmp_path / "copy"
    shutil.copytree(published, copy)
    experiments = "all" if (published / "experiments.csv").is_file() else ("table1",)
    reproduce(budget=plan["budget"], out_dir=copy, datasets=plan["datasets"],
              seeds=plan["seeds"], experiments=experiments, progress=False, train=False)
    return {n: ((published / n).read_bytes(), (copy / n).read_bytes())
            for n in REGENERATED if (published / n).is_file()}


def test_a_published_reproduction_regenerates_byte_for_byte(tmp_path):
    from fastff.reproduction.publish import MAX_BYTES
    out, pub = tmp_path / "repro", tmp_path / "published"
    assert main(["reproduce", "glorot2010", "--budget", "smoke", "--datasets", "shapeset",
                 "--out", str(out), "--workers", "1", "--quiet", "--publish", str(pub)]) == 0
    assert not list(pub.rglob("checkpoint.npz")) and len(list(pub.glob("runs/*/config.json"))) == 12
    assert sum(f.stat().st_size for f in pub.rglob("*") if f.is_file()) < MAX_BYTES
    files = _regenerated(pub, tmp_path)
    assert {"table1.csv", "pairwise.csv", "claims.csv", "claims.md"} <= set(files)
    for name, (before, after) in files.items():
        assert before == after, name
    # a folder that is not empty is refused before anything trains
    assert main(["reproduce", "glorot2010", "--budget", "smoke", "--datasets", "shapeset",
                 "--out", str(out), "--quiet", "--publish", str(pub)]) == 2


PUBLISHED = sorted((Path(__file__).resolve().parents[1] / "docs" / "results").glob("*/"))


@pytest.mark.parametrize("published", PUBLISHED, ids=[p.name for p in PUBLISHED])
def test_every_published_folder_regenerates_from_its_records(published, tmp_path):
    if not (published / "runs" / "runs.csv").is_file():
        # only the folders whose claims are withdrawn may lack their records
        assert not (published / "claims.md").exists(), f"{published.name}: claims without records"
        pytest.skip(f"{published.name}: its records were never committed (its claims are "
                    "withdrawn)")
    for name, (before, after) in _regenerated(published, tmp_path).items():
        assert before == after, f"{published.name}/{name} is not what its records give"
