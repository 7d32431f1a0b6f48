"""Glorot & Bengio (2010) as a plan of runs: the models of Table 1, the paper's numbers, the
budgets, and which runs each figure is drawn from.

Every number here that comes from the paper cites the paper's own section, equation, figure or
table; everything else is a choice of fastff, said as such (docs/protocol.md has them all).
"""
import json
from dataclasses import dataclass

PAPER = "glorot2010"
TITLE = ('Glorot & Bengio (2010), "Understanding the difficulty of training deep feedforward '
         'neural networks"')


@dataclass(frozen=True)
class Model:
    """One trained model: a hidden activation, an initialization and a depth, and for the
    paper's other experiments a pre-training, a cost, a finite training set or per-parameter
    learning rates (``optimizer``, :mod:`fastff.kernels.rates`)."""

    name: str
    activation: str
    init: str
    depth: int
    pretrain: str = None
    loss: str = "nll"
    finite: bool = False
    optimizer: str = "sgd"
    experiment: str = "table1"


# Table 1's rows, plus sigmoid with 4 hidden layers: the best sigmoid depth on Shapeset (§2.3)
# while Table 1's caption says 5, so both are run.
MODELS = (
    Model("Softsign", "softsign", "standard", 5),
    Model("Softsign N", "softsign", "normalized", 5),
    Model("Tanh", "tanh", "standard", 5),
    Model("Tanh N", "tanh", "normalized", 5),
    Model("Sigmoid", "sigmoid", "standard", 5),
    Model("Sigmoid depth 4", "sigmoid", "standard", 4),
)
# The paper's other experiments, on Shapeset (§5). Each names the model it is
# compared with and the paper's claim.
EXPERIMENT_MODELS = (
    # the reference of Fig. 11: supervised fine-tuning after denoising auto-encoder pre-training
    # (Vincent et al. 2008), of the standard-init tanh net as in the DAE papers
    Model("Tanh pre-trained", "tanh", "standard", 5, pretrain="dae", experiment="pretrain"),
    # pre-trained sigmoid nets do not show Fig. 2's top-layer saturation
    Model("Sigmoid depth 4 pre-trained", "sigmoid", "standard", 4, pretrain="dae",
          experiment="pretrain"),
    # the log-likelihood "worked much better" than the quadratic cost (§4.1, Fig. 5)
    Model("Tanh N, quadratic cost", "tanh", "normalized", 5, loss="quadratic", experiment="cost"),
    # the net of the SVM comparison: trained on the finite set the SVM sees
    Model("Tanh N, finite set", "tanh", "normalized", 5, finite=True, experiment="svm"),
    # per-parameter rates from a diagonal Hessian (LeCun et al. 1998b) or a gradient-variance
    # estimate, on the standard-init tanh net and combined with normalized init
    Model("Tanh, diagonal Hessian rates", "tanh", "standard", 5, optimizer="diag_hessian",
          experiment="second_order"),
    Model("Tanh, gradient-variance rates", "tanh", "standard", 5, optimizer="grad_variance",
          experiment="second_order"),
    Model("Tanh N, diagonal Hessian rates", "tanh", "normalized", 5, optimizer="diag_hessian",
          experiment="second_order"),
    Model("Tanh N, gradient-variance rates", "tanh", "normalized", 5,
          optimizer="grad_variance", experiment="second_order"),
)
EXPERIMENTS = ("table1", "pretrain", "cost", "svm", "second_order")
# experiment model -> (the model it is compared with, the paper's claim)
CLAIMS = {
    "Tanh pre-trained": ("Tanh N", "normalized init removes a good part of the gap to "
                         "pre-trained nets; the pre-trained curve ends lowest in Fig. 11"),
    "Sigmoid depth 4 pre-trained": ("Sigmoid depth 4", "the top hidden layer of a pre-trained "
                                    "sigmoid net does not saturate toward 0 (Fig. 2)"),
    "Tanh N, quadratic cost": ("Tanh N", "the log-likelihood works much better than the "
                               "quadratic cost (§4.1, Fig. 5)"),
    "Tanh N, finite set": ("RBF SVM", "on the same 100,000 examples the net beats the RBF SVM: "
                           "50.47% vs 59.47%"),
    **{f"Tanh, {kind} rates": ("Tanh", "per-parameter rates improve on plain SGD from the "
                               "standard init but stay below normalized init (Tanh N)")
       for kind in ("diagonal Hessian", "gradient-variance")},
    **{f"Tanh N, {kind} rates": ("Tanh N", "combined with normalized init, per-parameter rates "
                                 "help further") for kind in ("diagonal Hessian", "gradient-variance")},
}
# Test error in percent of the other experiments (§5); the paper gives no
# number for the pre-trained nets or the quadratic cost.
PAPER_EXPERIMENTS = {"Tanh N, finite set": 50.47, "RBF SVM": 59.47}
MODEL_BY_NAME = {m.name: m for m in MODELS + EXPERIMENT_MODELS}

DATASETS = ("shapeset", "mnist", "cifar10", "small_imagenet")
# Examples an evaluation of a finite dataset scores: its validation and test sets, 10,000 each
# (§2.2; Shapeset's are the budget's ``shapeset_sizes``)
EVAL_ROWS = {"mnist": 20_000, "cifar10": 20_000, "small_imagenet": 20_000}
DATASET_TITLES = {"shapeset": "Shapeset-3x2", "mnist": "MNIST", "cifar10": "CIFAR-10",
                  "small_imagenet": "Small-ImageNet"}

# Table 1, test error in percent. The paper has no depth-4 sigmoid row.
PAPER_TABLE1 = {
    "Softsign": {"shapeset": 16.27, "mnist": 1.64, "cifar10": 55.78, "small_imagenet": 69.14},
    "Softsign N": {"shapeset": 16.06, "mnist": 1.72, "cifar10": 53.8, "small_imagenet": 68.13},
    "Tanh": {"shapeset": 27.15, "mnist": 1.76, "cifar10": 55.9, "small_imagenet": 70.58},
    "Tanh N": {"shapeset": 15.60, "mnist": 1.64, "cifar10": 52.92, "small_imagenet": 68.57},
    "Sigmoid": {"shapeset": 82.61, "mnist": 2.21, "cifar10": 57.28, "small_imagenet": 70.66},
}
# The paper bolds results that differ from the others under a null-hypothesis test at this level
# (Table 1's caption; which cells are bold could not be recovered).
SIGNIFICANCE_LEVEL = 0.005


@dataclass(frozen=True)
class Budget:
    """How much to train: the width, and per dataset the learning-rate grid, updates and cadences.

    ``lrs``, ``updates`` and ``evals`` map a dataset name to its learning-rate grid (the paper does
    not give its grid, §2.3), the updates per run and the number of evaluations
    (valid and test error) over a run; ``monitors`` is the number of monitor snapshots. ``shapeset_sizes``
    are the fixed Shapeset validation and test sets (the paper does not give them).

    For the other experiments (Shapeset only): ``pretrain_updates`` auto-encoder updates per
    hidden layer at ``pretrain_lr`` (the paper gives neither; fastff's choice), the size of the
    ``finite`` training set shared by the SVM and its net (100,000 in the paper, §5), and
    the ``svm``'s arguments to :func:`fastff.baselines.rbf_svm`. ``rate_lrs`` is the
    learning-rate grid of the per-parameter-rate models (default: Shapeset's ``lrs``): their
    ``lr`` is the largest rate a parameter gets, most parameters get less.

    ``generator`` is the Shapeset-3x2 stream (:mod:`fastff.data.shapeset`): a budget whose
    results are published keeps the stream they were drawn from, so that its command gives them
    again bit for bit.

    ``widen`` is how many rungs of :data:`LR_LADDER` a model's grid may grow by, one rung per
    round, where its chosen rate sits at the grid's edge (:func:`widened`).

    ``chosen_seeds`` maps a dataset to the seeds in all that the chosen rate of each of
    :data:`SEEDED_MODELS` is run with, once the grids are settled (:func:`seeded`); the other
    rates keep ``seeds``.
    """

    name: str
    width: int
    lrs: dict
    updates: dict
    evals: dict
    monitors: int
    seeds: int
    shapeset_sizes: tuple
    about: str
    pretrain_updates: int = 0
    pretrain_lr: float = 0.01
    finite: int = 100_000
    svm: dict = None
    rate_lrs: tuple = None
    widen: int = 0
    generator: str = "counter"
    chosen_seeds: dict = None


BUDGETS = {
    # For the tests: narrow nets, a minute or two on 2 cores.
    "smoke": Budget(
        "smoke", width=32, lrs={d: (0.03, 0.1) for d in DATASETS},
        updates={"shapeset": 300, "mnist": 300, "cifar10": 300, "small_imagenet": 300},
        evals={"shapeset": 3, "mnist": 3, "cifar10": 3, "small_imagenet": 3}, monitors=3,
        seeds=1, shapeset_sizes=(500, 500), pretrain_updates=100, finite=2_000,
        svm=dict(method="exact", C=(1.0, 10.0), gamma_factors=(1.0,)),
        about="narrow nets (32 units per hidden layer) for a few hundred updates: checks the "
              "pipeline, not the paper"),
    # The full-width nets at what 2 cores finish in about an hour (Shapeset and MNIST).
    "quick": Budget(
        # measured on Shapeset over 12,000 updates: tanh N with lr 0.1 stays at 83-89% validation
        # error, with 0.03 it is at 74%; tanh with standard init and lr 0.1 at 73%
        "quick", width=1000, lrs={"shapeset": (0.01, 0.03, 0.1), "mnist": (0.03, 0.1),
                                  "cifar10": (0.01, 0.03), "small_imagenet": (0.01, 0.03)},
        updates={"shapeset": 20_000, "mnist": 8_000, "cifar10": 8_000, "small_imagenet": 8_000},
        evals={"shapeset": 10, "mnist": 5, "cifar10": 5, "small_imagenet": 5}, monitors=10,
        # pre-training: 2,000 updates per layer (10,000 for the 5-layer net, half its supervised
        # updates); the SVM: C above 0.1 takes the linear solver over 6 minutes per fit here
        seeds=1, shapeset_sizes=(2_000, 5_000), pretrain_updates=2_000, generator="sequential",
        svm=dict(method="nystroem", n_components=2_000, C=(0.03, 0.1), gamma_factors=(1.0, 2.0)),
        # per-parameter rates: two points (20,000 updates of their step, 2.5 times SGD's, take
        # about 10 min per run on one core)
        rate_lrs=(0.1, 0.3), widen=2,
        about="the paper's 1000-unit nets, 0.4% (Shapeset) and 0.16% (the others) of its 5 "
              "million updates"),
    # What shows the paper's central comparisons on one 2-core machine overnight: 4% of
    # its Shapeset horizon, where a probe of tanh against Tanh N at lr 0.03 (5,000 test images)
    # had them 7.3 points apart, far beyond noise. Learning rates, from the `quick` budget's
    # choices and that probe: on Shapeset the symmetric nets chose 0.03 (Softsign 0.1) and the
    # sigmoids 0.01, while 0.1 left Tanh N at 83-89% validation error; a ten times longer
    # horizon favours the gentler rates, so 0.01 and 0.03. On MNIST the standard-init nets
    # chose 0.1 and the normalized ones 0.03: both.
    "long": Budget(
        "long", width=1000, lrs={"shapeset": (0.01, 0.03), "mnist": (0.03, 0.1),
                                 "cifar10": (0.01, 0.03), "small_imagenet": (0.01, 0.03)},
        # MNIST: 12 epochs of its 50,000 training images at batch 10
        updates={"shapeset": 200_000, "mnist": 60_000, "cifar10": 60_000,
                 "small_imagenet": 60_000},
        evals={"shapeset": 20, "mnist": 12, "cifar10": 12, "small_imagenet": 12}, monitors=20,
        # 10,000 test images: twice the probe's, for the paired tests' power
        seeds=1, shapeset_sizes=(5_000, 10_000), pretrain_updates=20_000, generator="sequential",
        svm=dict(method="nystroem", n_components=4_000, C=(0.03, 0.1, 0.3),
                 gamma_factors=(1.0, 2.0)),
        # rungs added where a chosen rate sits at an edge, until none does (or the rung beyond
        # it diverges): a Shapeset rung costs 25-40 min; the symmetric models' chosen rates
        # with 3 seeds on Shapeset and 5 on MNIST, each seed its own weights and stream
        rate_lrs=(0.03, 0.1, 0.3), widen=3, chosen_seeds={"shapeset": 3, "mnist": 5},
        about="the paper's 1000-unit nets, 4% (Shapeset) and 1.2% (the others) of its 5 "
              "million updates, 3 seeds (Shapeset) and 5 (MNIST) of the symmetric models: 58 "
              "runs, 18 hours of one worker, about 10 hours on 2 cores (AMD EPYC Zen 4) for "
              "Shapeset and MNIST"),
    # The paper's horizon: 5 million updates per run (§2.3), for a cluster or the GPU.
    "paper": Budget(
        "paper", width=1000, lrs={d: (0.001, 0.003, 0.01, 0.03, 0.1) for d in DATASETS},
        updates={d: 5_000_000 for d in DATASETS},
        evals={d: 50 for d in DATASETS}, monitors=50,
        seeds=3, shapeset_sizes=(10_000, 10_000), pretrain_updates=500_000,
        svm=dict(method="exact", C=(1.0, 10.0, 100.0), gamma_factors=(0.5, 1.0, 2.0)),
        rate_lrs=(0.003, 0.01, 0.03, 0.1, 0.3), widen=1,
        about="the paper's 1000-unit nets and its 5 million updates per run (§2.3)"),
}

# Which runs each per-layer figure is drawn from (Figs. 2-4 and 6-10), all on Shapeset: the
# models, in panel order, and the figure functions of fastff.report.figures that draw them.
LAYER_FIGURES = (
    ("fig02_sigmoid4_activation_mean_std.png", "activation_mean_std", ("Sigmoid depth 4",),
     "Fig. 2: sigmoid activations per layer (4 hidden layers, standard init)"),
    ("fig02b_pretrained_sigmoid4_activation_mean_std.png", "activation_mean_std",
     ("Sigmoid depth 4", "Sigmoid depth 4 pre-trained"),
     "Fig. 2 with pre-training: sigmoid activations per layer, from random init (top) and "
     "after denoising auto-encoder pre-training (bottom)"),
    ("fig03_tanh_softsign_activation_p98_std.png", "activation_p98_std", ("Tanh", "Softsign"),
     "Fig. 3: 98th percentile and std of the activations, tanh (top) and softsign (bottom), "
     "standard init"),
    ("fig04_tanh_softsign_activation_hist_end.png", "activation_hist_end", ("Tanh", "Softsign"),
     "Fig. 4: activation histograms at the end of training, tanh (top) and softsign (bottom)"),
    ("fig06_activation_hist_init.png", "activation_hist_init", ("Tanh", "Tanh N"),
     "Fig. 6: activation histograms at initialization, standard (top) and normalized (bottom)"),
    ("fig07_backprop_grad_hist_init.png", "delta_hist_init", ("Tanh", "Tanh N"),
     "Fig. 7: back-propagated gradients dC/ds at initialization, standard and normalized"),
    ("fig08_weight_grad_hist_init.png", "grad_w_hist_init", ("Tanh", "Tanh N"),
     "Fig. 8: weight gradients dC/dW at initialization, standard and normalized"),
    ("fig09_weight_grad_std_training.png", "grad_w_std_training", ("Tanh", "Tanh N"),
     "Fig. 9: weight-gradient std intervals during training, standard and normalized"),
    ("fig10_tanh_n_activation_p98_std.png", "activation_p98_std", ("Tanh N",),
     "Fig. 10: 98th percentile and std of the activations, tanh with normalized init"),
    ("jacobian_singular_values.png", "jacobian", ("Tanh", "Tanh N"),
     "Eq. 17: mean singular value of the layer Jacobians, standard and normalized tanh"),
)
# Figures that need no run.
STANDALONE_FIGURES = (
    ("fig01_shapeset_samples.png", "shapeset_samples",
     "Fig. 1 (top): Shapeset-3x2 images at their 32x32, with their classes"),
    ("fig05_cost_surface.png", "cost_surface",
     "Fig. 5: cross-entropy and quadratic cost over two weights, plateaus measured"),
)
# Figs. 11 and 12: test error over training for every model of Table 1 (§5), and in
# Fig. 11 the pre-trained reference when it ran.
CURVE_EXTRAS = ("Tanh pre-trained",)
CURVE_FIGURES = (
    ("fig11_shapeset_test_error.png", ("shapeset",),
     "Fig. 11: Shapeset-3x2 test error during training, every model at its chosen learning rate "
     "(a pre-trained net's updates count from the end of its pre-training)"),
    ("fig12_mnist_cifar10_test_error.png", ("mnist", "cifar10"),
     "Fig. 12: MNIST and CIFAR-10 test error during training"),
    ("small_imagenet_test_error.png", ("small_imagenet",),
     "Small-ImageNet test error during training"),
)


# Test-error curves of chosen Shapeset models on one axis, drawn when at least two of them ran.
MODEL_CURVES = (
    ("second_order_test_error.png",
     ("Tanh", "Tanh N", "Tanh, diagonal Hessian rates", "Tanh, gradient-variance rates",
      "Tanh N, diagonal Hessian rates", "Tanh N, gradient-variance rates"),
     "Per-parameter learning rates beside plain SGD on Shapeset-3x2, each model at its chosen "
     "learning rate"),
)


def experiment_models(experiments):
    """The models the chosen experiments train, Table 1's first."""
    return [m for m in MODELS + EXPERIMENT_MODELS if m.experiment in experiments]


def points(budget, datasets, seeds, data_dir=None, experiments=("table1",)):
    """The train() arguments of every run of the reproduction: models x datasets x learning
    rates x seeds (the other experiments' models on Shapeset only). Returns a list of dicts,
    in that order within each dataset."""
    out = []
    for dataset in datasets:
        n = budget.updates[dataset]
        for model in experiment_models(experiments):
            if model.experiment != "table1" and dataset != "shapeset":
                continue
            lrs = budget.lrs[dataset]
            if model.optimizer != "sgd" and budget.rate_lrs is not None:
                lrs = budget.rate_lrs
            for lr in lrs:
                for seed in range(seeds):
                    p = dict(dataset=dataset, arch=f"{budget.width}x{model.depth}",
                             activation=model.activation, init=model.init, lr=lr, seed=0,
                             updates=n, eval_every=max(1, n // budget.evals[dataset]),
                             monitor_every=max(1, n // budget.monitors))
                    if dataset == "shapeset":
                        p["data_options"] = dict(valid_size=budget.shapeset_sizes[0],
                                                 test_size=budget.shapeset_sizes[1],
                                                 generator=budget.generator)
                        if model.finite:
                            p["data_options"]["finite"] = budget.finite
                    if model.pretrain:
                        p.update(pretrain=model.pretrain, pretrain_updates=budget.pretrain_updates,
                                 pretrain_lr=budget.pretrain_lr)
                    if model.loss != "nll":
                        p["loss"] = model.loss
                    if model.optimizer != "sgd":
                        p["optimizer"] = model.optimizer
                    if data_dir is not None:
                        p["data_dir"] = str(data_dir)
                    out.append(with_seed(p, seed))
    return out


def with_seed(point, seed):
    """``point`` (a seed-0 run) with another seed: its own weights and training stream (the
    data follow ``seed``), and the test set of seed 0, so that every seed of every model is
    scored on one test set (Shapeset's evaluation sets come from ``eval_seed``; a finite
    dataset's test set is its file's)."""
    if seed == 0:
        return dict(point)
    p = dict(point, seed=seed)
    if p["dataset"] == "shapeset":
        p["data_options"] = dict(p["data_options"], eval_seed=0)
    return p


# The models whose chosen rate gets a budget's ``chosen_seeds``: Table 1's symmetric units, the
# initialization claims' subjects.
SEEDED_MODELS = ("Softsign", "Softsign N", "Tanh", "Tanh N")


def seeded(points, rows, choose, counts):
    """The runs that give each of :data:`SEEDED_MODELS` its ``counts[dataset]`` seeds at the
    learning rate chosen for it.

    Parameters
    ----------
    points : list of dict
        The runs planned so far (train() arguments).
    rows : list of dict
        Their sweep rows.
    choose : callable
        runs -> (lr, ...): the rate chosen among one model's runs on one dataset
        (:func:`fastff.reproduction.table.choose_lr`; None before any has finished).
    counts : dict
        Dataset -> seeds in all.

    Returns
    -------
    list of dict
        The points not planned yet, each a planned seed-0 point with another seed
        (:func:`with_seed`).
    """
    groups = {}
    for r in rows:
        groups.setdefault((r["dataset"], model_of(r)), []).append(r)
    planned = {json.dumps(p, sort_keys=True, default=str) for p in points}
    out = []
    for (dataset, model), runs in groups.items():
        if model is None or model.name not in SEEDED_MODELS or counts.get(dataset, 1) < 2:
            continue
        lr = choose(runs)[0]
        if lr is None:
            continue
        for p in points:
            if p["dataset"] == dataset and model_of(p) == model and float(p["lr"]) == lr \
                    and p["seed"] == 0:
                for seed in range(1, counts[dataset]):
                    new = with_seed(p, seed)
                    if json.dumps(new, sort_keys=True, default=str) not in planned:
                        out.append(new)
    return out


# The rungs a learning-rate grid grows along: the paper's grid steps by about 3 (0.001, 0.003,
# 0.01, ...; fastff's choice, the paper does not give its grid, §2.3), from a rate
# too small to move in these budgets to one every model here diverges at.
LR_LADDER = (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0)


def next_rate(lr, up):
    """The rung of :data:`LR_LADDER` beyond ``lr`` (above it when ``up``), or None past its
    ends."""
    beyond = [r for r in LR_LADDER if (r > lr * (1 + 1e-9) if up else r < lr * (1 - 1e-9))]
    return (min(beyond) if up else max(beyond)) if beyond else None


def widened(points, rows, edge):
    """The runs that widen each model's grid by one rung where its chosen rate sits at an edge.

    Parameters
    ----------
    points : list of dict
        The runs planned so far (train() arguments).
    rows : list of dict
        Their sweep rows (arguments and results).
    edge : callable
        runs -> ``smallest``, ``largest`` or None: where one model's chosen rate sits in its
        grid on one dataset (:func:`fastff.reproduction.table.grid_edge`).

    Returns
    -------
    list of (dict, str)
        New points, one per seed of the edge rate's runs, each with why it is added; none for
        a model whose edge rate is the ladder's end.
    """
    groups = {}
    for r in rows:
        groups.setdefault((r["dataset"], model_of(r)), []).append(r)
    out = []
    for (dataset, model), runs in groups.items():
        side = edge(runs)
        if model is None or side is None:
            continue
        lrs = sorted({float(r["lr"]) for r in runs})
        lr = lrs[0] if side == "smallest" else lrs[-1]
        new = next_rate(lr, up=side == "largest")
        if new is None:
            continue
        why = (f"{model.name} on {DATASET_TITLES[dataset]}: lr {lr:g} is the {side} of "
               f"{', '.join(f'{x:g}' for x in lrs)}")
        seeds = [p for p in points if p["dataset"] == dataset and model_of(p) == model
                 and float(p["lr"]) == lr]
        out += [(dict(p, lr=new), why) for p in seeds]
    return out


def model_of(point):
    """The model a run belongs to, from its train() arguments (a sweep's row: values may be
    JSON text, absent keys empty strings)."""
    depth = int(str(point["arch"]).split("x")[-1])
    options = point.get("data_options") or {}
    if isinstance(options, str):
        options = json.loads(options)
    key = (point["activation"], point["init"], depth, point.get("pretrain") or None,
           point.get("loss") or "nll", bool(options.get("finite")),
           point.get("optimizer") or "sgd")
    for m in MODELS + EXPERIMENT_MODELS:
        if (m.activation, m.init, m.depth, m.pretrain, m.loss, m.finite, m.optimizer) == key:
            return m
    return None
