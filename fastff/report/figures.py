"""The paper's figures from run directories (matplotlib, Agg backend).

Every figure function takes a list of :class:`~fastff.report.runs.RunData` and returns a
matplotlib Figure, or None when no run has what it needs. Per-run figures stack one panel per
run, top to bottom, as the paper stacks its standard (top) and normalized (bottom) panels.
The x axis counts updates; a second axis on top counts examples seen (the paper's "epochs"
are undefined for online Shapeset, Fig. 2). Panels that are compared share their
x and y scales (and heat maps their colour scale), so that equal heights mean equal values.
"""
import numpy as np

from .plotting import finish, pyplot, save_png  # noqa: F401  (save_png: the report's)
from . import cost_surface as surface


def _layer_colors(n):
    return pyplot().cm.viridis(np.linspace(0.0, 0.85, n))


def _panels(runs, height=2.9):
    """One axis per run, stacked, sharing x and y scales."""
    plt = pyplot()
    fig, axes = plt.subplots(len(runs), 1, figsize=(8.5, height * len(runs) + 0.4), squeeze=False,
                             sharex=True, sharey=True)
    for ax in axes[:, 0]:
        ax.tick_params(labelbottom=True)  # every panel keeps its own labels
    return fig, axes[:, 0]


def _examples_axis(ax, batch):
    top = ax.secondary_xaxis("top", functions=(lambda u: u * batch, lambda e: e / batch))
    top.set_xlabel("examples seen", fontsize=8)
    top.tick_params(labelsize=7)


def _legend(ax):
    """Legend outside the plot, on the right, so that it hides no data."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _monitored(runs):
    return [r for r in runs if len(r.stats)]


def _monitor_panels(runs, draw, title, xlabel=None):
    """One panel per run that has monitor snapshots; ``draw(ax, run)`` fills a panel and
    returns its y label and title. Without ``xlabel`` the x axis is updates, with examples
    seen on top."""
    runs = _monitored(runs)
    if not runs:
        return None
    fig, axes = _panels(runs)
    for ax, run in zip(axes, runs):
        ylabel, panel_title = draw(ax, run)
        ax.set(xlabel=xlabel or "updates", ylabel=ylabel, title=panel_title)
        if xlabel is None:
            _examples_axis(ax, run.batch_size)
        _legend(ax)
    return finish(fig, title)


def _layer_intervals(ax, run, mean_name, std_name, spread, **style):
    """mean ± std of one statistic per layer over training, the layers' bars side by side."""
    u = run.stats.updates
    mean, std = run.stats.scalar(mean_name), run.stats.scalar(std_name)
    span = max(int(u[-1]), 1)
    for k, c in enumerate(_layer_colors(run.n_hidden)):
        shift = (k - run.n_hidden / 2) * span * spread  # keep the bars of the layers apart
        ax.errorbar(u + shift, mean[:, k], yerr=std[:, k], color=c, capsize=2,
                    label=f"layer {k + 1}", **style)


def activation_mean_std(runs):
    """Fig. 2: mean and std (vertical bars) of the activations per layer over training."""
    def draw(ax, run):
        _layer_intervals(ax, run, "act_mean", "act_std", 0.004, lw=1, marker="o", ms=2.5)
        return "activation mean ± std", run.label
    return _monitor_panels(runs, draw, "Activation mean and standard deviation per layer (paper Fig. 2)")


def activation_p98_std(runs):
    """Figs. 3 and 10: 98th percentile of |h| (markers alone) and std (lines with markers)."""
    def draw(ax, run):
        u, p98, std = run.stats.updates, run.stats.scalar("act_p98"), run.stats.scalar("act_std")
        for k, c in enumerate(_layer_colors(run.n_hidden)):
            ax.plot(u, p98[:, k], ls="none", marker="^", ms=4, color=c)
            ax.plot(u, std[:, k], ls="-", marker="o", ms=2.5, color=c, label=f"layer {k + 1}")
        return "98th pct |h| (▲), std (—)", run.label
    return _monitor_panels(runs, draw, "98th percentile (markers) and std (lines) of activations "
                           "(paper Figs. 3, 10)")


def _histograms(runs, name, when, xlabel, title):
    def draw(ax, run):
        m = run.stats[when]
        edges = m.edges[name]
        centres = (edges[:-1] + edges[1:]) / 2
        outside = m.outside.get(name, np.full(run.n_hidden, np.nan))
        for k, c in enumerate(_layer_colors(run.n_hidden)):
            counts = m.hists[name][k].astype(np.float64)
            # fractions of all the layer's values: those outside the range are not piled into
            # the end bins but said in the legend
            inside = 1.0 - outside[k] if np.isfinite(outside[k]) else 1.0
            total = counts.sum() / inside if inside > 0 else 0.0
            note = f" ({100 * outside[k]:.2g}% outside)" if outside[k] > 0 else ""
            ax.plot(centres, counts / total if total else counts, color=c, lw=1.2,
                    label=f"layer {k + 1}{note}")
        return "fraction of values", f"{run.label}, update {m.update}"
    return _monitor_panels(runs, draw, title, xlabel=xlabel)


def activation_hist_end(runs):
    """Fig. 4: normalized histograms of the activations at the end of training."""
    return _histograms(runs, "act", -1, "activation value",
                       "Activation histograms at the end of training (paper Fig. 4)")


def activation_hist_init(runs):
    """Fig. 6: normalized histograms of the activations at initialization."""
    return _histograms(runs, "act", 0, "activation value",
                       "Activation histograms at initialization (paper Fig. 6)")


def delta_hist_init(runs):
    """Fig. 7: histograms of the back-propagated gradients dC/ds at initialization."""
    return _histograms(runs, "delta", 0, "back-propagated gradient dC/ds",
                       "Back-propagated gradient histograms at initialization (paper Fig. 7)")


def grad_w_hist_init(runs):
    """Fig. 8: histograms of the weight gradients dC/dW just after initialization."""
    return _histograms(runs, "grad_w", 0, "weight gradient dC/dW",
                       "Weight gradient histograms at initialization (paper Fig. 8)")


def grad_w_std_training(runs):
    """Fig. 9: standard-deviation intervals of the weight gradients per layer during training."""
    def draw(ax, run):
        _layer_intervals(ax, run, "grad_w_mean", "grad_w_std", 0.006, fmt="none", lw=1.2)
        return "dC/dW mean ± std", run.label
    return _monitor_panels(runs, draw, "Weight gradient std intervals per layer during training "
                           "(paper Fig. 9)")


def error_curves(ax, runs):
    """Test error against updates of each run on ``ax``, the legend sorted by decreasing final
    error as in the paper. Returns the number of curves drawn."""
    curves = []
    for run in runs:
        u, err = run.series("eval", "test_error")
        if len(u):
            curves.append((err[-1], run, u, err))
    for final, run, u, err in sorted(curves, key=lambda c: -c[0]):
        ax.plot(u, 100 * err, marker="o", ms=2.5,
                label=f"{run.label}: {100 * final:.2f}% (batch {run.batch_size})")
    ax.set(xlabel="updates", ylabel="test error (%)")
    if curves and len({run.batch_size for _, run, _, _ in curves}) == 1:
        _examples_axis(ax, curves[0][1].batch_size)
    _legend(ax)
    ax.grid(alpha=0.3)
    return len(curves)


def test_error_curves(runs):
    """Fig. 11: test error against updates for every run on one axis; the legend is sorted by
    decreasing final error, as in the paper."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    if not error_curves(ax, runs):
        plt.close(fig)
        return None
    return finish(fig, "Test error during training (paper Figs. 11, 12)")


def pretraining(runs):
    """Denoising auto-encoder pre-training: each layer's reconstruction cross-entropy over its
    updates (fastff.training.pretrain), one panel per pre-trained run."""
    runs = [r for r in runs if r.pretrain]
    if not runs:
        return None
    fig, axes = _panels(runs)
    for ax, run in zip(axes, runs):
        layers = sorted({row["layer"] for row in run.pretrain})
        for layer, color in zip(layers, _layer_colors(len(layers))):
            rows = [row for row in run.pretrain if row["layer"] == layer]
            ax.plot([row["update"] for row in rows], [row["reconstruction"] for row in rows],
                    marker="o", ms=2.5, lw=1, color=color, label=f"layer {layer}")
        ax.set_yscale("log")
        ax.set_xlabel("auto-encoder updates (each layer)")
        ax.set_ylabel("reconstruction cross-entropy\nper example")
        ax.set_title(run.label)
        _legend(ax)
    return finish(fig, "Pre-training: reconstruction cost per layer (denoising auto-encoders)")


def saturation_heatmap(runs):
    """Fraction of saturated outputs (low + high) per layer over training, from the per-step
    kernel statistics of every update."""
    usable = []
    for run in runs:
        rows = [run.series("train", s, k) for k in range(1, run.n_hidden + 1)
                for s in ("sat_low", "sat_high")]
        if rows and len(rows[0][0]) > 1:
            usable.append((run, rows))
    if not usable:
        return None
    fig, axes = _panels([r for r, _ in usable], height=2.4)
    grids = []
    for run, rows in usable:
        u = rows[0][0][1:]  # update 0 has no steps behind it
        sat = np.array([rows[2 * k][1][1:] + rows[2 * k + 1][1][1:] for k in range(run.n_hidden)])
        grids.append((u, 100 * sat))
    # one colour scale for every panel: the same colour is the same saturation
    finite = [g[np.isfinite(g)] for _, g in grids]
    top = max((float(f.max()) for f in finite if f.size), default=1.0)
    for ax, (run, _), (u, sat) in zip(axes, usable, grids):
        prev = np.concatenate([[0], u[:-1]])  # each value covers the updates since the last row
        xedges = np.concatenate([prev[:1], u])
        mesh = ax.pcolormesh(xedges, np.arange(run.n_hidden + 1) + 0.5, np.ma.masked_invalid(sat),
                             cmap="magma", vmin=0, vmax=max(top, 1e-9))
        ax.set(xlabel="updates", ylabel="hidden layer", title=run.label,
               yticks=np.arange(1, run.n_hidden + 1))
        fig.colorbar(mesh, ax=ax, label="% saturated")
    return finish(fig, "Saturated outputs per layer over training (thresholds: fastff.config)")


def jacobian(runs):
    """Mean singular value of each layer's Jacobian (Eq. 17) at every snapshot that has it."""
    plt = pyplot()
    runs = _monitored(runs)
    fig, ax = plt.subplots(figsize=(9.5, 3.8))
    drawn = False
    colors = plt.cm.tab10(np.arange(max(len(runs), 1)) % 10)
    for run, c in zip(runs, colors):
        sv = run.stats.scalar("jacobian_sv")
        have = np.flatnonzero(np.isfinite(sv).any(axis=1))
        for i, t in enumerate(have):
            layers = np.arange(1, run.n_hidden + 1)
            ax.plot(layers, sv[t], color=c, marker="o", ms=3, ls="-" if i == 0 else "--",
                    alpha=1.0 if i == 0 else 0.6,
                    label=f"{run.label}, update {run.stats.updates[t]}")
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel="hidden layer", ylabel="mean singular value of J",
           xticks=np.arange(1, max(r.n_hidden for r in runs) + 1))
    _legend(ax)
    ax.grid(alpha=0.3)
    return finish(fig, "Layer Jacobian mean singular value (paper Eq. 17: ~0.5 standard, ~0.8 normalized)")


def cost_surface(runs=None):
    """Fig. 5: the log-likelihood and quadratic costs of a one-hidden-layer tanh net over two
    weights, with the plateaus measured (drawn without a run; fastff.report.cost_surface)."""
    return surface.draw()


def shapeset_samples(runs=None, rows=4, cols=8, seed=0, balanced=False, generator=None):
    """Fig. 1 (top): a labelled grid of Shapeset-3x2 images at their 32x32 (drawn without a
    run; ``generator``: the stream, default the default one)."""
    from ..data import shapeset
    generator = shapeset.GENERATOR if generator is None else generator
    images, labels, _ = shapeset.generate(rows * cols, seed=seed, balanced=balanced,
                                          generator=generator)
    plt = pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.45 * rows))
    for ax, img, lab in zip(np.ravel(axes), images, labels):
        ax.imshow(img.reshape(shapeset.SIZE, shapeset.SIZE), cmap="gray", vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_title(shapeset.CLASS_NAMES[lab], fontsize=8)
        ax.axis("off")
    fig.suptitle(f"Shapeset-3x2, {generator} stream, seed {seed} (T triangle, P parallelogram, "
                 "E ellipse)", fontsize=9)
    fig.tight_layout()
    return fig


# (file name, figure function): the order of the report
FIGURES = (
    ("fig02_activation_mean_std.png", activation_mean_std),
    ("fig03_fig10_activation_p98_std.png", activation_p98_std),
    ("fig04_activation_hist_end.png", activation_hist_end),
    ("fig05_cost_surface.png", cost_surface),
    ("fig06_activation_hist_init.png", activation_hist_init),
    ("fig07_backprop_grad_hist_init.png", delta_hist_init),
    ("fig08_weight_grad_hist_init.png", grad_w_hist_init),
    ("fig09_weight_grad_std_training.png", grad_w_std_training),
    ("fig11_test_error.png", test_error_curves),
    ("pretraining_reconstruction.png", pretraining),
    ("saturation_heatmap.png", saturation_heatmap),
    ("jacobian_singular_values.png", jacobian),
)
