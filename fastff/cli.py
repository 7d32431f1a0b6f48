"""The ``fastff`` command line: train, report, and look at or fetch data.

Examples::

    fastff train                                   # the paper's 5x1000 tanh net on Shapeset
    fastff train --arch 1000x4 --activation sigmoid --init standard --updates 50000 --out runs/sig
    fastff report runs/std runs/norm --out report  # the paper's figures and an index.html
    fastff data show shapeset --out shapeset.png
    fastff data fetch mnist
"""
import argparse
import json
import sys

from . import activations, data
from .errors import FastffError
from .init import INITS


def _train(args):
    from .train import train
    options = {}
    if args.dataset == "shapeset":
        options = dict(valid_size=args.eval_size, test_size=args.eval_size)
    run = train(args.arch, dataset=args.dataset, activation=args.activation, init=args.init,
                lr=args.lr, batch_size=args.batch_size, updates=args.updates, device=args.device,
                seed=args.seed, eval_every=args.eval_every, out_dir=args.out,
                progress=not args.quiet, resume=args.resume, dtype=args.dtype,
                data_options=options, data_dir=args.data_dir, monitor_every=args.monitor_every,
                jacobian_every=args.jacobian_every)
    last = run.final
    print(f"{run.model}")
    print(f"updates {last['update']}  examples {last['examples']}  train loss {last['train_loss']:.4f}  "
          f"valid error {100 * last['valid_error']:.2f}%  test error {100 * last['test_error']:.2f}%  "
          f"({last['seconds']:.1f} s)")
    sat = [f"L{k}: {100 * (last[f'L{k}_sat_low'] + last[f'L{k}_sat_high']):.1f}%"
           for k in range(1, run.model.n_hidden + 1)]
    print("saturated units (last interval): " + "  ".join(sat))
    if run.dir is not None:
        print(f"run record: {run.dir}/ (config.json, metrics.csv, stats.npz, checkpoint.npz); "
              f"figures: fastff report {run.dir}")
    return 0


def _report(args):
    from .report import report
    index = report(args.runs, args.out)
    print(f"wrote {index} and the figures beside it")
    return 0


def _data_show(args):
    import numpy as np
    from .data import shapeset
    if args.name != "shapeset":
        raise FastffError("`fastff data show` draws Shapeset-3x2 only")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise FastffError("drawing needs matplotlib: pip install 'fastff[plot]'") from None
    images, labels, _ = shapeset.generate(args.rows * args.cols, seed=args.seed,
                                          balanced=args.balanced)
    fig, axes = plt.subplots(args.rows, args.cols, figsize=(1.3 * args.cols, 1.45 * args.rows))
    for ax, img, lab in zip(np.ravel(axes), images, labels):
        ax.imshow(img.reshape(32, 32), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(shapeset.CLASS_NAMES[lab], fontsize=8)
        ax.axis("off")
    fig.suptitle(f"Shapeset-3x2, seed {args.seed} (T triangle, P parallelogram, E ellipse)", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
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


def build_parser():
    p = argparse.ArgumentParser(prog="fastff", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an MLP with SGD and record the run")
    t.add_argument("--arch", default="1000x5", help="hidden layers, e.g. 1000x5 (default) or 1024-1000x5-9")
    t.add_argument("--dataset", default="shapeset", choices=sorted(data.LOADERS))
    t.add_argument("--activation", default="tanh", choices=activations.HIDDEN_ACTIVATIONS)
    t.add_argument("--init", default="normalized", choices=sorted(INITS))
    t.add_argument("--lr", type=float, default=0.01)
    t.add_argument("--batch-size", type=int, default=10)
    t.add_argument("--updates", type=int, default=10_000)
    t.add_argument("--eval-every", type=int, default=None)
    t.add_argument("--eval-size", type=int, default=5_000, help="Shapeset validation and test size")
    t.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    t.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default=None, help="run directory (default: no record)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--data-dir", default=None)
    t.add_argument("--monitor-every", type=int, default=None,
                   help="updates between monitor snapshots (default updates/10; 0: off)")
    t.add_argument("--jacobian-every", type=int, default=None,
                   help="updates between Jacobian decompositions (default: update 0 only)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    r = sub.add_parser("report", help="draw the paper's figures from run directories")
    r.add_argument("runs", nargs="+", help="run directories (one panel each, in this order)")
    r.add_argument("--out", default=None,
                   help="output directory (default RUN/figures for one run, fastff-report for more)")
    r.set_defaults(func=_report)

    d = sub.add_parser("data", help="look at or fetch datasets")
    dsub = d.add_subparsers(dest="data_command", required=True)
    show = dsub.add_parser("show", help="write a PNG grid of examples with their labels")
    show.add_argument("name", choices=["shapeset"])
    show.add_argument("--out", default="shapeset.png")
    show.add_argument("--rows", type=int, default=6)
    show.add_argument("--cols", type=int, default=8)
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--balanced", action="store_true")
    show.set_defaults(func=_data_show)
    fetch = dsub.add_parser("fetch", help="fetch and verify a dataset into the cache")
    fetch.add_argument("name", choices=["mnist", "cifar10"])
    fetch.add_argument("--data-dir", default=None)
    fetch.set_defaults(func=_data_fetch)
    return p


def main(argv=None):
    """Entry point of the ``fastff`` command."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FastffError as exc:
        print(f"fastff: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
