"""Every option of :func:`fastff.train`, defined once.

Each :class:`Option` says its default, its check, its help text, where the run record keeps it
and whether a resumed run may change it. From this one table come ``train``'s signature and
docstring, the ``fastff train`` command line, ``config.json`` and the rules of ``--resume``.
Adding an option means adding an entry here (and using its value where the run needs it).
"""
import os
import re
from dataclasses import dataclass, field, fields
from typing import Optional


from .. import activations, data as datasets
from ..checks import choose, flag, positive, seed as check_seed
from ..data.shapeset import GENERATORS as SHAPESET_STREAMS
from ..errors import InputError, RecordError
from ..init import INITS
from ..kernels.rates import METHODS as rate_methods, check_hyper as check_rates
from .pretrain import check_options as check_pretrain

OPTIMIZERS = ("sgd", *rate_methods)
_NO = object()  # no value: a default that is computed, or no command-line default of its own


def _positive_int(name):
    return lambda v: positive(name, v, integer=True)


def _optional(check):
    return lambda v: None if v is None else check(v)


def _bool(name):
    return lambda value: flag(name, value)


def _one_of(name, valid):
    def check(value):
        choose(name, value, dict.fromkeys(valid))
        return value
    return check


def _monitor_every(v):
    return v if v in (None, 0) else positive("monitor_every", v, integer=True)


def _data_options(v):
    if v is not None and not isinstance(v, dict):
        raise InputError(f"data_options must be a dict, got {type(v).__name__}")
    return v


def _seconds(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or v == float("inf"):
        raise InputError(f"checkpoint_every must be a number of seconds >= 0 (0: off), got {v!r}")
    return float(v)


@dataclass(frozen=True)
class Option:
    """One training option.

    Attributes
    ----------
    name : str
        The keyword of :func:`fastff.train` (``--name-with-dashes`` on the command line).
    default
        Its default; None for options whose default is computed from others.
    type : str
        Its type, as the docstring says it.
    help : str
        What it does (the docstring's text and, up to its first period, ``--help``'s).
    check : callable
        value -> the value to use; raises InputError.
    config_key : str or None
        The key of ``config.json`` that keeps it (None: not kept there).
    resume : str
        ``fixed``: a resumed run must have the saved value; ``saved``: fixed, and when not
        given it is the saved run's; ``free``: a resumed run may change it.
    cli : dict or None
        argparse arguments of its command-line flag (None: not on the command line).
    cli_default
        The command line's own default, where it differs from the function's.
    before : object
        The value of runs recorded before the option existed (their config.json lacks it).
    short : str
        ``--help``'s text, where the first sentence of ``help`` does not serve.
    """

    name: str
    default: object
    type: str
    help: str
    check: object = None
    config_key: object = None
    resume: str = "fixed"
    cli: dict = field(default_factory=dict)
    cli_default: object = _NO
    before: object = _NO
    short: str = ""

    def flag(self):
        return "--" + self.name.replace("_", "-")

    def cli_help(self):
        """``--help``'s text: ``short``, or the first sentence of ``help`` without its markup."""
        text = self.short or re.split(r"(?<=[a-z)])\. (?=[A-Z])", self.help)[0].rstrip(".")
        text = re.sub(r"\s*\([^()]*:(mod|func|class):`[^`]+`[^()]*\)", "", text)
        text = text.replace("``", "")
        return text if text[:2].isupper() else text[:1].lower() + text[1:]  # SGD stays SGD


def option(default, type, help, **entry):
    """A field of :class:`TrainOptions`: its default, and the rest of its :class:`Option`
    entry (``type`` as the docstring says it, ``help``, ``check``, ``config_key``, ...)."""
    return field(default=default, metadata={"option": dict(type=type, help=help, **entry)})


@dataclass(frozen=True)
class Derived:
    """What a run derives from its options once they are checked (never an option itself).

    Attributes
    ----------
    pretrain : dict or None
        The pre-training phase's settings (:func:`fastff.training.pretrain.check_options`:
        method, updates, corruption, lr); None without one.
    rates : dict or None
        ``damping`` and ``decay`` of the per-parameter rates; None for ``sgd``.
    """

    pretrain: Optional[dict]
    rates: Optional[dict]


@dataclass(frozen=True)
class TrainOptions:
    """Every option of :func:`fastff.train`, typed, checked when made and frozen after: the
    one table of the options (each field's metadata is its :class:`Option` entry), from which
    come ``train``'s docstring, the command line's flags, ``config.json`` and the rules of
    ``--resume``. ``TrainOptions(lr=0.1, updates=500)`` gives a :class:`Trainer` its options;
    what the run derives from them is in ``derived`` (:class:`Derived`).
    """

    dataset: "str | datasets.Dataset" = option("shapeset", "str or Dataset",
            "``shapeset`` (online, the default), ``mnist``, ``cifar10`` or ``small_imagenet``, or "
            "a Dataset object (its arrays are checked: float inputs, finite, labels in range).",
            config_key="dataset", cli=dict(choices=sorted(datasets.LOADERS)),
            short="dataset; shapeset is generated online")
    activation: str = option("tanh", "str", "Hidden-unit nonlinearity (:mod:`fastff.activations`).",
            check=_one_of("activation", activations.HIDDEN_ACTIVATIONS), config_key="activation",
            cli=dict(choices=activations.HIDDEN_ACTIVATIONS))
    init: str = option("normalized", "str",
            "Weight initialization: the paper's standard (eq. 1) or normalized (eq. 16) "
            "(:mod:`fastff.init`).", check=_one_of("init", INITS), config_key="init",
            cli=dict(choices=sorted(INITS)),
            short="weight initialization: the paper's standard (eq. 1) or normalized (eq. 16)")
    lr: float = option(0.01, "float",
            "Learning rate; the paper tunes it per network (its §2.3; docs/protocol.md).",
            check=lambda v: positive("lr", v), config_key="lr", cli=dict(type=float))
    batch_size: int = option(10, "int", "Examples per update (10 in the paper).",
            check=_positive_int("batch_size"), config_key="batch_size", cli=dict(type=int))
    updates: int = option(20_000, "int",
            "SGD updates in all. On resume: the new total, at least what the checkpoint has done.",
            check=_positive_int("updates"), config_key="updates", resume="free",
            cli=dict(type=int), cli_default=10_000)
    device: str = option("cpu", "str", "Where to train: ``cpu`` or ``cuda``.",
            check=_one_of("device", ("cpu", "cuda")), config_key="device",
            resume="free", cli=dict(choices=["cpu", "cuda"]))
    seed: int = option(0, "int",
            "Fixes the weights and, unless ``data_seed`` is given, the data: the same seed gives "
            "the same numbers on the CPU.",
            check=check_seed, config_key="seed", cli=dict(type=int))
    data_seed: Optional[int] = option(None, "int, optional",
            "Fixes the dataset apart from the weights: Shapeset's training stream and its "
            "validation and test sets, a finite dataset's epoch order (default: ``seed``). Runs "
            "of several seeds with one ``data_seed`` are scored on the same test set, so they "
            "can be compared pairwise.",
            check=_optional(check_seed), config_key="data_seed", before=None, cli=dict(type=int),
            short="fixes the dataset (stream, validation and test sets, epoch order) apart from "
            "the weights (default: --seed)")
    eval_every: Optional[int] = option(None, "int, optional",
            "Updates between evaluations (default: updates / 10; on resume, the saved run's). "
            "Update 0 is always evaluated.",
            check=_optional(_positive_int("eval_every")), config_key="eval_every", resume="saved",
            cli=dict(type=int))
    out_dir: "Optional[str | os.PathLike]" = option(None, "str, optional",
            "Run directory (config.json, metrics.csv, stats.npz, checkpoint.npz). A directory "
            "that already holds a run is refused unless ``resume`` or ``overwrite`` is given.",
            resume="free", cli=None)
    progress: bool = option(True, "bool",
            "Show a progress bar (and say when kernels are being compiled).",
            check=_bool("progress"), resume="free", cli=None)
    resume: bool = option(False, "bool",
            "Continue the run in ``out_dir`` from its checkpoint; the result equals an "
            "uninterrupted run's.", check=_bool("resume"), resume="free",
            cli=dict(action="store_true"))
    overwrite: bool = option(False, "bool",
            "Replace the run in ``out_dir``: every file of the old run is removed first.",
            check=_bool("overwrite"), resume="free", cli=dict(action="store_true"))
    dtype: str = option("float32", "str", "Floating-point type of parameters and activations.",
            config_key="dtype", cli=dict(choices=["float32", "float64"]))
    tf32: bool = option(False, "bool",
            "With ``device='cuda'`` and float32: products of batches over 16 on tensor cores, "
            "operands rounded to TF32 (:class:`fastff.MLP`). Faster, but no longer the paper's "
            "float32 numbers.", check=_bool("tf32"), config_key="tf32", before=False,
            cli=dict(action="store_true"),
            short="CUDA, float32: products of batches over 16 on tensor cores in TF32 (not the "
                  "paper's float32 numbers)")
    data_options: Optional[dict] = option(None, "dict, optional",
            "Passed to :func:`fastff.data.load` (e.g. ``{\"valid_size\": 2000}`` for Shapeset).",
            check=_data_options, config_key="data_options", cli=None)
    data_dir: "Optional[str | os.PathLike]" = option(None, "str, optional",
            "Where to look for dataset files first (see :func:`fastff.data.load`).",
            resume="free", cli={})
    monitor_every: Optional[int] = option(None, "int, optional",
            "Updates between measurements of the paper's statistics on the fixed monitor set "
            "(the first 300 test examples; :mod:`fastff.monitor`). Update 0 and the last update "
            "are always measured. Default: updates / 10 (on resume, the saved run's), which "
            "keeps monitoring under 5% of the training time of the paper's net at batch 10 on "
            "the CPU; 0 turns monitoring off.",
            check=_monitor_every, config_key="monitor_every", resume="saved", cli=dict(type=int))
    jacobian_every: Optional[int] = option(None, "int, optional",
            "Updates between layer-Jacobian decompositions, taken at monitor snapshots (the most "
            "expensive measurement; the last update is included). Default: at update 0 only, "
            "where the paper measures it.",
            check=_optional(_positive_int("jacobian_every")), config_key="jacobian_every",
            resume="saved", cli=dict(type=int))
    loss: str = option("nll", "str",
            "The output cost: ``nll`` (the softmax's negative log-likelihood, the paper's) or "
            "``quadratic`` (the squared error between the softmax and the one-hot target; "
            ":mod:`fastff.losses`, Fig. 5).", check=_one_of("loss", ("nll", "quadratic")),
            config_key="loss", before="nll",
            cli=dict(choices=["nll", "quadratic"]),
            short="output cost: the softmax's negative log-likelihood (the paper's) or the "
            "quadratic cost between the softmax and the one-hot target (Fig. 5)")
    pretrain: Optional[str] = option(None, "str, optional",
            "``\"dae\"``: before the supervised updates, pre-train each hidden layer as a "
            "denoising auto-encoder (:mod:`fastff.training.pretrain`; the paper's reference of "
            "Fig. 11), logged to ``pretrain.csv`` and in ``Run.pretrain``.",
            config_key="pretrain", before=None, cli=dict(choices=["dae"]))
    pretrain_updates: Optional[int] = option(None, "int, optional",
            "Auto-encoder updates per hidden layer (default: ``updates`` / 10).",
            config_key="pretrain", cli=dict(type=int))
    corruption: float = option(0.25, "float",
            "Masking-noise probability of the auto-encoders (Vincent et al. 2008 use 0.25 among "
            "others).", config_key="pretrain", cli=dict(type=float))
    pretrain_lr: Optional[float] = option(None, "float, optional",
            "Learning rate of the auto-encoders (default: ``lr``).", config_key="pretrain",
            cli=dict(type=float))
    optimizer: str = option("sgd", "str",
            "``sgd`` (the paper's), or SGD with a per-parameter rate ``lr / (1 + A / damping)`` "
            "from a running estimate A (the paper's \"second-order\" trials, "
            ":mod:`fastff.kernels.rates`): ``diag_hessian``, the Gauss-Newton diagonal of LeCun "
            "et al. (1998b); ``grad_variance``, the per-example gradient's standard deviation. "
            "``lr`` is then the largest rate a parameter gets.",
            check=_one_of("optimizer", OPTIMIZERS),
            config_key="optimizer", before="sgd", cli=dict(choices=list(OPTIMIZERS)))
    damping: Optional[float] = option(None, "float, optional",
            "The estimate's scale in the per-parameter rate (default: "
            "``fastff.config.SECOND_ORDER_DAMPING[optimizer]``).",
            config_key="rate_options", before=None, cli=dict(type=float))
    estimate_decay: Optional[float] = option(None, "float, optional",
            "The running average's memory, in [0, 1) (default: "
            "``fastff.config.SECOND_ORDER_DECAY``).", config_key="rate_options", cli=dict(type=float))
    checkpoint_every: float = option(300.0, "float",
            "Seconds of wall time between checkpoints of a run with ``out_dir``, whatever the "
            "evaluation cadence (each evaluation writes one too); 0 writes them only at "
            "evaluations. A run interrupted (Ctrl-C, SIGTERM) writes one at once.",
            check=_seconds, config_key="checkpoint_every", resume="free", cli=dict(type=float))
    derived: Derived = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        for o in OPTIONS:  # each alone, normalized (while the object is made: frozen after)
            if o.check is not None:
                object.__setattr__(self, o.name, o.check(getattr(self, o.name)))
        object.__setattr__(self, "derived", _derive(self))

    @classmethod
    def from_dict(cls, options):
        """TrainOptions from a dict of ``train()`` keywords (unknown names: InputError)."""
        if isinstance(options, cls):
            return options
        if not isinstance(options, dict):
            raise InputError(f"the options must be a dict of train() options or TrainOptions, "
                             f"got {type(options).__name__}")
        unknown = [k for k in options if k not in BY_NAME]
        if unknown:
            raise InputError(f"train() got unknown option(s) {', '.join(map(repr, unknown))}; "
                             f"valid: {', '.join(BY_NAME)}")
        return cls(**options)

    def as_dict(self):
        """Every option by name (``derived`` left out)."""
        return {o.name: getattr(self, o.name) for o in OPTIONS}


OPTIONS = tuple(Option(name=f.name, default=f.default, **f.metadata["option"])
                for f in fields(TrainOptions) if f.init)
BY_NAME = {o.name: o for o in OPTIONS}
# Keys of config.json that a resumed run must share with the saved one, and the values of runs
# recorded before a key existed
RESUME_FIXED = tuple(dict.fromkeys(o.config_key for o in OPTIONS
                                   if o.config_key and o.resume in ("fixed", "saved")))
OLD_DEFAULTS = {o.config_key: o.before for o in OPTIONS if o.before is not _NO}


def docstring(head, tail):
    """A numpydoc docstring: ``head``, then every option's entry, then ``tail``."""
    lines = [head.rstrip(), "", "    Parameters", "    ----------",
             "    arch : str or list of int",
             "        Hidden layers (``\"1000x5\"`` or ``[1000] * 5``) or full sizes "
             "(``\"1024-1000x5-9\"``,",
             "        whose first and last sizes must be the dataset's inputs and classes)."]
    for o in OPTIONS:
        lines.append(f"    {o.name} : {o.type}")
        lines += _wrap(o.help, "        ")
    return "\n".join(lines) + "\n" + tail


def _wrap(text, indent, width=96):
    out, line = [], indent
    for word in text.split():
        if len(line) + len(word) + 1 > width and line.strip():
            out.append(line.rstrip())
            line = indent
        line += word + " "
    return out + [line.rstrip()]


def _derive(v):
    """The options checked together; returns what the run derives from them."""
    if v.pretrain is None and (v.pretrain_updates, v.pretrain_lr) != (None, None):
        raise InputError("pretrain_updates and pretrain_lr need pretrain='dae'")
    pretrain = check_pretrain(
        v.pretrain, max(1, v.updates // 10) if v.pretrain_updates is None else v.pretrain_updates,
        v.corruption, v.lr if v.pretrain_lr is None else v.pretrain_lr)
    rates = None
    if v.optimizer == "sgd":
        if (v.damping, v.estimate_decay) != (None, None):
            raise InputError("damping and estimate_decay are for optimizer='diag_hessian' or "
                             "'grad_variance'")
    else:
        _, damping, decay = check_rates(v.optimizer, v.damping, v.estimate_decay)
        rates = dict(damping=damping, decay=decay)
        if v.optimizer == "grad_variance" and v.batch_size < 2:
            raise InputError("optimizer='grad_variance' estimates a variance over each batch "
                             "and needs batch_size >= 2")
    if v.resume and v.overwrite:
        raise InputError("resume=True continues the run in out_dir and overwrite=True replaces "
                         "it: choose one")
    if (v.resume or v.overwrite) and v.out_dir is None:
        raise InputError(f"{'resume' if v.resume else 'overwrite'}=True needs out_dir, the "
                         f"run to {'continue' if v.resume else 'replace'}")
    return Derived(pretrain=pretrain, rates=rates)


def check(options):
    """The options of a ``train`` call (a dict of its keywords, or :class:`TrainOptions`),
    checked alone and together: a :class:`TrainOptions`."""
    return TrainOptions.from_dict(options)


def config_json(v, cadence, sizes, data, model, versions, threads):
    """The run's config.json: every recorded option (the grouped ones under their group's key:
    ``pretrain``, ``rate_options``), with the values the run resolved (``cadence``: the
    evaluation and monitoring cadences, :func:`fastff.training.resume.resolve_cadences`)."""
    out = dict(arch=sizes)
    for o in OPTIONS:
        if o.config_key and o.config_key not in out:
            out[o.config_key] = getattr(cadence, o.name, getattr(v, o.name))
    out.update(dataset=data.name, activation=model.activation, device=model.device,
               dtype=model.dtype.name, loss=model.loss, data_options=v.data_options or {},
               pretrain=v.derived.pretrain, rate_options=v.derived.rates,
               versions=versions, threads=threads)
    if getattr(data, "generator", None):  # which Shapeset stream the images came from
        out["shapeset_generator"] = data.generator
    return out


def _saved_check(o):
    """The check of option ``o``'s value as config.json keeps it (None: not checked there)."""
    if o.check is not None:
        return o.check
    choices = (o.cli or {}).get("choices")
    if choices is not None and o.config_key != "dataset":  # a Dataset object records its own name
        return _one_of(o.name, choices)
    return None


def _saved_arch(sizes):
    if not (isinstance(sizes, list) and len(sizes) >= 2 and all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes)):
        raise InputError(f"must be the layer sizes (a list of at least 2 positive integers), "
                         f"got {sizes!r}")
    return sizes


def _saved_group(value):
    if value is not None and not isinstance(value, dict):
        raise InputError(f"must be a dict or null, got {value!r}")
    return value


# config.json's keys that are no option's own, and their checks
_SAVED_EXTRA = {"arch": _saved_arch, "pretrain": _saved_group, "rate_options": _saved_group,
                "shapeset_generator": _one_of("shapeset_generator", SHAPESET_STREAMS)}


def check_saved(config, path):
    """A run's config.json as read back (resuming it, reporting it): each value the run reads
    is checked as the option's own check checks it; returns ``config``.

    Raises
    ------
    RecordError
        Naming ``path`` and the key whose value fails its check.
    """
    checks = dict(_SAVED_EXTRA)
    for o in OPTIONS:
        if o.config_key and o.config_key not in checks and _saved_check(o) is not None:
            checks[o.config_key] = _saved_check(o)
    for key, check_value in checks.items():
        if key not in config:
            continue
        try:
            check_value(config[key])
        except InputError as exc:
            raise RecordError(f"{path} is damaged: its {key!r} fails its check ({exc})") from None
    return config


def add_arguments(parser):
    """One flag per option that has one, with its help text and default."""
    for o in OPTIONS:
        if o.cli is None:
            continue
        default = o.default if o.cli_default is _NO else o.cli_default
        parser.add_argument(o.flag(), default=default, dest=o.name, help=o.cli_help(), **o.cli)


def from_arguments(args):
    """The options that ``add_arguments`` put on ``args``."""
    return {o.name: getattr(args, o.name) for o in OPTIONS if o.cli is not None}
