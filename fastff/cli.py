"""The ``fastff`` command line: train, report, export, and look at or fetch data.

Examples::

    fastff train                                   # the paper's 5x1000 tanh net on Shapeset
    fastff train --arch 1000x4 --activation sigmoid --init standard --updates 50000 --out runs/sig
    fastff report runs/std runs/norm --out report  # the paper's figures and an index.html
    fastff sweep '{"init": ["standard", "normalized"], "updates": 1000}' --out sweeps/init
    fastff reproduce glorot2010 --budget quick --out repro   # Table 1 and Figs. 2-4, 6-12
    fastff export tensorboard runs/std runs/norm   # scalars and histograms for TensorBoard
    fastff figure cost-surface --out fig05.png     # Fig. 5, no run needed
    fastff data show shapeset --out shapeset.png
    fastff data fetch mnist
"""
import argparse
import os
import sys
from pathlib import Path

from ._version import __version__
from .checks import positive
from .errors import FastffError, InputError
from .flags import add_flags, flag_values
from .training import Interrupted, options as training_options


def _train(args):
    from .training import options, train
    data_options = {}
    if args.dataset == "shapeset":
        data_options = dict(valid_size=args.eval_size, test_size=args.eval_size)
        if args.finite is not None:
            data_options["finite"] = args.finite
        if args.shapeset_generator is not None:  # else the default, or a resumed run's own
            data_options["generator"] = args.shapeset_generator
    elif args.finite is not None:
        raise InputError("--finite is a Shapeset option (the other datasets are finite already)")
    elif args.shapeset_generator is not None:
        raise InputError("--shapeset-generator is a Shapeset option")
    run = train(args.arch, **options.from_arguments(args), out_dir=args.out,
                progress=not args.quiet, data_options=data_options)
    last = run.final
    if run.pretrain:
        final = {}
        for row in run.pretrain:
            final[row["layer"]] = row["reconstruction"]
        print("pre-trained (denoising auto-encoders), final reconstruction cross-entropy: "
              + "  ".join(f"L{k}: {v:.4g}" for k, v in final.items()))
    print(f"{run.model}")
    if run.config.get("optimizer", "sgd") != "sgd":
        o = run.config["rate_options"]
        print(f"optimizer {run.config['optimizer']}: per-parameter rates lr / (1 + estimate / "
              f"{o['damping']:g}), running average decay {o['decay']:g}")
    print(f"updates {last['update']}  examples {last['examples']}  train loss {last['train_loss']:.4f}  "
          f"valid error {100 * last['valid_error']:.2f}%  test error {100 * last['test_error']:.2f}%  "
          f"({last['seconds']:.1f} s)")
    sat = [f"L{k}: {100 * (last[f'L{k}_sat_low'] + last[f'L{k}_sat_high']):.1f}%"
           for k in range(1, run.model.n_hidden + 1)]
    print("saturated units (last interval): " + "  ".join(sat))
    if run.dir is not None:
        from .record import RUN_FILES
        files = [f for f in RUN_FILES if (run.dir / f).is_file()]
        print(f"run record: {run.dir}/ ({', '.join(files)}); figures: fastff report {run.dir}")
    return 0


def _report(args):
    from .report import report
    index = report(args.runs, args.out)
    print(f"wrote {index} and the figures beside it")
    return 0


def _data_show(args):
    if args.name != "shapeset":
        raise FastffError("`fastff data show` draws Shapeset-3x2 only")
    positive("--rows", args.rows, integer=True)
    positive("--cols", args.cols, integer=True)
    out = Path(args.out)
    if not out.parent.is_dir():
        raise InputError(f"cannot write {out}: the directory {out.parent} does not exist")
    if out.is_dir():
        raise InputError(f"cannot write {out}: it is a directory")
    from .report import figures
    fig = figures.shapeset_samples(rows=args.rows, cols=args.cols, seed=args.seed,
                                   balanced=args.balanced, generator=args.generator)
    try:
        fig.savefig(out, dpi=110)
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc}") from None
    print(f"wrote {out}")
    return 0


def _data_fetch(args):
    if args.name == "cifar10":
        from .data import cifar10
        print(f"cifar10: {cifar10.fetch_to_cache()}")
        return 0
    from .data import mnist
    paths = mnist.locate(args.data_dir, fetch=True)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _sweep(args):
    import json
    from .sweeps import SWEEP_FLAGS, sweep
    spec = Path(args.spec)
    try:
        grid = json.loads(spec.read_text() if spec.is_file() else args.spec)
    except ValueError as exc:
        raise InputError(f"SPEC must be a JSON file or JSON text of a grid: {exc}") from None
    rows = sweep(grid, **flag_values(args, SWEEP_FLAGS))
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "diverged", "failed")}
    print(f"{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items())
          + f"; table: {Path(args.out_dir) / 'runs.csv'}")
    return 0 if not counts["failed"] else 1


def _reproduce(args):
    from .reproduction import REPRODUCE_FLAGS, reproduce
    result = reproduce(args.paper, **flag_values(args, REPRODUCE_FLAGS))
    print((result.out_dir / "table1.md").read_text())
    if result.experiments:
        print((result.out_dir / "experiments.md").read_text())
    print(f"wrote {result.index}, table1.csv, table1.md"
          + (", experiments.csv, experiments.md" if result.experiments else "")
          + f" and {len(result.figures)} figures")
    failed = sum(r["status"] == "failed" for r in result.runs)
    if failed:
        print(f"{failed} runs failed: see {result.out_dir / 'runs' / 'runs.csv'}", file=sys.stderr)
    return 0 if not failed else 1


def _figure_cost_surface(args):
    from .report.cost_surface import cost_surface, draw
    from .report.plotting import save_png
    out = Path(args.out)
    if not out.parent.is_dir():
        raise InputError(f"cannot write {out}: the directory {out.parent} does not exist")
    surface = cost_surface(span=args.span, points=args.points, seed=args.seed)
    save_png(draw(surface), out)
    print("plateau (|grad| < 1% of max, cost above median): " + ", ".join(
        f"{name} {100 * v:.1f}% of the grid" for name, v in surface.plateau.items()))
    print(f"wrote {out}")
    return 0


def _export_tensorboard(args):
    from .export import tensorboard
    written = tensorboard(args.runs, args.out)
    for run_dir, log_dir in written:
        print(f"{run_dir} -> {log_dir}")
    logdir = args.out or os.path.commonpath([str(d.resolve()) for _, d in written])
    print(f"view with: tensorboard --logdir {logdir}")
    return 0


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where it is None (the help says what happens)."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def _add_train(sub, fmt):
    """``fastff train``: its flags come from fastff.training.options."""
    t = sub.add_parser("train", help="train an MLP with SGD and record the run", formatter_class=fmt,
                       description="Train an MLP with plain minibatch SGD, as Glorot & Bengio "
                       "(2010) do, and record the run (config.json, metrics.csv, stats.npz, "
                       "checkpoint.npz) in --out.")
    t.add_argument("--arch", default="1000x5",
                   help="hidden layers (1000x5) or full sizes starting and ending with the "
                   "dataset's inputs and classes (1024-1000x5-9)")
    training_options.add_arguments(t)  # every option of fastff.train that has a flag
    t.add_argument("--eval-size", type=int, default=5_000,
                   help="Shapeset validation and test set size")
    t.add_argument("--finite", type=int, default=None,
                   help="train on a fixed set of this many Shapeset images instead of the online "
                   "stream (the paper's SVM comparison uses 100000)")
    t.add_argument("--shapeset-generator", choices=["counter", "sequential"], default=None,
                   help="Shapeset's stream: counter (the default; each image from its index, "
                   "drawn on the GPU when training there, with the same bits) or sequential (the "
                   "stream before version 0.2); --resume keeps the run's own")
    t.add_argument("--out", default=None, help="run directory (default: no record)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)


def _add_report(sub, fmt):
    """``fastff report``."""
    r = sub.add_parser("report", help="draw the paper's figures from run directories",
                       formatter_class=fmt)
    r.add_argument("runs", nargs="+", help="run directories (one panel each, in this order)")
    r.add_argument("--out", default=None,
                   help="output directory (default: RUN/figures for one run, fastff-report for more)")
    r.set_defaults(func=_report)


def _add_sweep(sub, fmt):
    """``fastff sweep``."""
    w = sub.add_parser("sweep", formatter_class=fmt, help="train every point of a grid on Dask",
                       description="Train one run per point of a grid of train() arguments, "
                       "on a LocalCluster of worker processes or an existing Dask cluster, and "
                       "keep OUT/runs.csv. Run again, finished runs are skipped and unfinished "
                       "ones resumed.")
    from .sweeps import SWEEP_FLAGS
    w.add_argument("spec", help='grid as JSON (a file, or the text), e.g. \'{"activation": '
                   '["tanh", "softsign"], "init": ["standard", "normalized"], "updates": 1000}\'')
    add_flags(w, SWEEP_FLAGS)
    w.set_defaults(func=_sweep)


def _add_reproduce(sub, fmt):
    """``fastff reproduce``."""
    from .reproduction import REPRODUCE_FLAGS
    rp = sub.add_parser("reproduce", formatter_class=fmt,
                        help="reproduce a paper's comparison (Table 1 and the figures)",
                        description="Train every model of Glorot & Bengio (2010)'s Table 1 over a "
                        "learning-rate grid on Dask, choose each learning rate on validation "
                        "error, and write OUT/table1.csv, table1.md, the figures and index.html. "
                        "Run again, finished runs are skipped and unfinished ones resumed.")
    rp.add_argument("paper", choices=["glorot2010"], help="the paper")
    add_flags(rp, REPRODUCE_FLAGS)
    rp.set_defaults(func=_reproduce)


def _add_figure(sub, fmt):
    """``fastff figure``: figures that need no run."""
    fg = sub.add_parser("figure", help="draw a figure that needs no run")
    fsub = fg.add_subparsers(dest="figure_command", required=True)
    cs = fsub.add_parser("cost-surface", formatter_class=fmt,
                         help="Fig. 5: cross-entropy and quadratic cost over two weights")
    cs.add_argument("--out", default="fig05_cost_surface.png", help="PNG file to write")
    cs.add_argument("--span", type=float, default=8.0, help="both weights run over [-span, span]")
    cs.add_argument("--points", type=int, default=61, help="grid points per weight")
    cs.add_argument("--seed", type=int, default=0, help="fixes the random inputs and targets")
    cs.set_defaults(func=_figure_cost_surface)


def _add_export(sub, fmt):
    """``fastff export``."""
    e = sub.add_parser("export", help="export runs to other tools")
    esub = e.add_subparsers(dest="export_command", required=True)
    tb = esub.add_parser("tensorboard", formatter_class=fmt,
                         help="write TensorBoard event files (scalars and histograms)")
    tb.add_argument("runs", nargs="+", help="run directories")
    tb.add_argument("--out", default=None,
                    help="log directory; with several runs each goes into OUT/RUN_NAME "
                    "(default: RUN/tensorboard for each run)")
    tb.set_defaults(func=_export_tensorboard)


def _add_data(sub, fmt):
    """``fastff data``: look at or fetch datasets."""
    d = sub.add_parser("data", help="look at or fetch datasets")
    dsub = d.add_subparsers(dest="data_command", required=True)
    show = dsub.add_parser("show", help="write a PNG grid of examples with their labels",
                           formatter_class=fmt)
    show.add_argument("name", choices=["shapeset"])
    show.add_argument("--out", default="shapeset.png", help="PNG file to write")
    show.add_argument("--rows", type=int, default=6, help="rows of the grid")
    show.add_argument("--cols", type=int, default=8, help="columns of the grid")
    show.add_argument("--seed", type=int, default=0, help="generator seed")
    show.add_argument("--balanced", action="store_true", help="draw the 9 classes uniformly")
    show.add_argument("--generator", choices=["counter", "sequential"], default="counter",
                      help="the stream to draw from")
    show.set_defaults(func=_data_show)
    fetch = dsub.add_parser("fetch", help="fetch and verify a dataset into the cache",
                            formatter_class=fmt)
    fetch.add_argument("name", choices=["mnist", "cifar10"])
    fetch.add_argument("--data-dir", default=None, help="look here first")
    fetch.set_defaults(func=_data_fetch)


def build_parser():
    fmt = _Defaults
    p = argparse.ArgumentParser(prog="fastff", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"fastff {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _add_train(sub, fmt)
    _add_report(sub, fmt)
    _add_sweep(sub, fmt)
    _add_reproduce(sub, fmt)
    _add_figure(sub, fmt)
    _add_export(sub, fmt)
    _add_data(sub, fmt)
    return p


def main(argv=None):
    """Entry point of the ``fastff`` command."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FastffError as exc:
        print(f"fastff: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:  # the run saved what it could (fastff.training.signals)
        print(f"fastff: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print("fastff: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
