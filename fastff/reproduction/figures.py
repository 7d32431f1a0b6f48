"""A reproduction's figures: Figs. 2-12 drawn from the chosen runs (Fig. 5 from none)."""
from ..report.runs import load_run
from . import glorot2010
from .chosen import chosen_runs
from .glorot2010 import DATASET_TITLES


def draw_figures(out, rows, table):
    """Draw Figs. 2-12 (Fig. 5 needs no run, the others come from the chosen runs); returns
    [(file name, caption)]."""
    from ..report import figures as F
    loaded = {}

    def runs_of(dataset):
        if dataset not in loaded:
            loaded[dataset] = {m: load_run(out / "runs" / name, title=m)
                               for m, name in chosen_runs(rows, table, dataset).items()}
        return loaded[dataset]

    written = []
    for name, draw, models, caption in glorot2010.LAYER_FIGURES:
        have = runs_of("shapeset")
        if not all(m in have for m in models):
            continue
        fig = getattr(F, draw)([have[m] for m in models])
        if fig is not None:
            F.save_png(fig, out / name)
            written.append((name, caption))
    for name, draw, caption in glorot2010.STANDALONE_FIGURES:
        F.save_png(getattr(F, draw)(), out / name)
        written.append((name, caption))
    plt = F.pyplot()
    for name, sets, caption in glorot2010.CURVE_FIGURES:
        sets = [d for d in sets if runs_of(d)]
        if not sets:
            continue
        fig, axes = plt.subplots(len(sets), 1, figsize=(9.5, 4.2 * len(sets)), squeeze=False)
        for ax, d in zip(axes[:, 0], sets):
            F.error_curves(ax, [run for m, run in runs_of(d).items()
                                if m in glorot2010.CURVE_EXTRAS
                                or glorot2010.MODEL_BY_NAME[m].experiment == "table1"])
            ax.set_title(f"{DATASET_TITLES[d]}: each model at its chosen learning rate")
        F.save_png(F.finish(fig, caption), out / name)
        written.append((name, caption))
    for name, models, caption in glorot2010.MODEL_CURVES:
        have = runs_of("shapeset")
        chosen = [have[m] for m in models if m in have]
        if sum(glorot2010.MODEL_BY_NAME[run.title].experiment != "table1" for run in chosen):
            fig = F.test_error_curves(chosen)
            if fig is not None:
                F.save_png(F.finish(fig, caption), out / name)
                written.append((name, caption))
    return written
