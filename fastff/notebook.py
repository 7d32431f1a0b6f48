"""Compact HTML summaries for Jupyter: the ``_repr_html_`` of :class:`fastff.MLP`, of a
:class:`~fastff.training.Run`, and of the statistics objects (:class:`fastff.model.StepStats`,
:class:`fastff.kernels.ForwardStats` / :class:`~fastff.kernels.BackwardStats`,
:class:`fastff.monitor.Stats`).

Tables carry the numbers; where matplotlib is installed, a run and a monitor's snapshots also
show one small inline figure (a PNG in the page, so that a notebook saved with its outputs
shows it anywhere).
"""
import base64
import html
import io
import math

import numpy as np

from .arrays import to_host

# the figure's size in inches and its resolution: small enough to sit beside the tables
FIGURE_INCHES, FIGURE_DPI = (6.4, 2.2), 80


def number(v, percent=False):
    """A number as a table shows it: 4 significant digits; a percentage with 2 decimals;
    ``-`` where there is none (None or NaN)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{100 * float(v):.2f}%" if percent else f"{float(v):.4g}"


def table(columns, rows, caption=None):
    """An HTML table; ``columns`` are header texts, ``rows`` lists of cells (text, escaped)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    cap = (f'<caption style="text-align:left">{html.escape(caption)}</caption>'
           if caption else "")
    return (f'<table class="fastff">{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def figure(draw, panels=1):
    """An ``<img>`` of a small figure of ``panels`` axes side by side drawn by ``draw(axes)``,
    or ``""`` without matplotlib. Drawn on a Figure of its own (no pyplot state is touched)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return ""
    fig = Figure(figsize=FIGURE_INCHES, dpi=FIGURE_DPI, layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    draw(axes)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="fastff figure" src="data:image/png;base64,{data}"/>'


def box(title, *parts):
    """The summary's frame: a bold title line, then its parts."""
    return (f'<div class="fastff-summary"><strong>{html.escape(title)}</strong>'
            + "".join(parts) + "</div>")


# -- the objects' summaries --------------------------------------------------------------------
def model_html(model):
    """A network: one row per layer with its weights' spread and the paper's conditions on it
    (n_in Var[W] = 1 for the forward pass, eq. 10; n_out Var[W] = 1 for the backward, eq. 11;
    the standard initialization gives n_in Var[W] = 1/3, eq. 15)."""
    rows = []
    for k, (W, b) in enumerate(model.params, start=1):
        W, b = model.backend.to_host(W), model.backend.to_host(b)
        n_in, n_out = W.shape
        var = float(W.astype(np.float64).var())
        act = model.layer_activations[k - 1]
        rows.append([k if k <= model.n_hidden else "softmax", f"{n_in} -> {n_out}", act,
                     number(float(W.std())), number(n_in * var), number(n_out * var),
                     number(float(np.abs(b).max()))])
    return box(repr(model), table(
        ["layer", "units", "activation", "std W", "n_in Var[W] (eq. 10)",
         "n_out Var[W] (eq. 11)", "max |b|"], rows))


def _layer_rows(summaries, keys, relu):
    """Table rows of per-layer summaries (dicts), the fractions as percentages; ``dead``
    only for relu (the other units never die)."""
    keys = [k for k in keys if relu or k != "dead"]
    percent = {"sat_low", "sat_high", "dead"}
    return keys, [[k] + [number(s.get(key), key in percent) for key in keys]
                  for k, s in enumerate(summaries, start=1)]


HEADERS = {"sat_low": "saturated low", "sat_high": "saturated high", "mean": "mean h",
           "std": "std h", "dead": "dead", "delta_std": "std dC/ds", "grad_w_std": "std dC/dW"}


def _history_layers(history, n_hidden, relu):
    """The per-layer step statistics at the last evaluation of a run's history."""
    last = history[-1]
    summaries = [{key: last.get(f"L{k}_{key}") for key in HEADERS} for k in range(1, n_hidden + 1)]
    keys, rows = _layer_rows(summaries, ["sat_low", "sat_high", "mean", "std", "dead",
                                         "delta_std"], relu)
    return table(["layer"] + [HEADERS[k] for k in keys], rows,
                 f"the training steps' statistics since the previous evaluation "
                 f"(update {last.get('update')})")


def _draw_run(history, n_hidden):
    updates = [row["update"] for row in history]

    def draw(axes):
        for k in range(1, n_hidden + 1):
            sat = [row.get(f"L{k}_sat_low", np.nan) + row.get(f"L{k}_sat_high", np.nan)
                   for row in history]
            axes[0].plot(updates, np.multiply(sat, 100), label=f"layer {k}")
            axes[1].plot(updates, [row.get(f"L{k}_std", np.nan) for row in history])
        top = max((line.get_ydata().max() for line in axes[0].lines), default=0.0)
        axes[0].set_ylim(0, max(1.0, 1.1 * float(np.nan_to_num(top))))  # a percentage, from 0
        axes[0].set(xlabel="updates", ylabel="saturated (%)")
        axes[1].set(xlabel="updates", ylabel="std of h")
        axes[0].legend(fontsize=7, ncol=2)
    return draw


def run_html(run):
    """A run: its final errors, the per-layer saturation and activation spread at the last
    evaluation, the monitor's last snapshot where it measured, and a small figure of every
    layer's saturation and spread over training."""
    model = run.model
    title = (f"fastff run: {'-'.join(map(str, model.sizes))} {model.activation}, "
             f"{model.init} init" + (f", {run.config['dataset']}" if isinstance(
                 run.config.get("dataset"), str) else "")
             + (f" ({run.dir})" if run.dir is not None else ""))
    if not run.history:
        return box(title, "<p>no evaluation yet</p>")
    last = run.history[-1]
    final = table(["update", "examples", "train loss", "valid error", "test error", "seconds"],
                  [[number(last.get("update")), number(last.get("examples")),
                    number(last.get("train_loss")), number(last.get("valid_error"), True),
                    number(last.get("test_error"), True), number(last.get("seconds"))]],
                  "final")
    parts = [final, _history_layers(run.history, model.n_hidden, model.activation == "relu")]
    if len(run.stats):
        parts.append(measurement_table(run.stats[-1]))
    parts.append(figure(_draw_run(run.history, model.n_hidden), panels=2))
    return box(title, *parts)


# the monitor's scalars a snapshot's table shows (fastff.monitor.SCALARS), with their headers
MONITOR_COLUMNS = {"act_mean": "mean h", "act_std": "std h", "act_p98": "98th pct of |h|",
                   "sat_low": "saturated low", "sat_high": "saturated high",
                   "delta_std": "std dC/ds", "grad_w_std": "std dC/dW",
                   "jacobian_sv": "mean Jacobian singular value"}


def measurement_table(m):
    """One monitor snapshot (:class:`fastff.monitor.Measurement`): a row per hidden layer."""
    rows = [[k] + [number(m.layer(k).get(name), percent=name.startswith("sat"))
                   for name in MONITOR_COLUMNS] for k in range(1, m.n_layers + 1)]
    state = "" if m.finite else ", NOT FINITE: the network diverged"
    return table(["layer", *MONITOR_COLUMNS.values()], rows,
                 f"monitor set at update {m.update}: loss {number(m.loss)}, error "
                 f"{number(m.error, True)}{state}")


def stats_html(stats):
    """The monitor's snapshots: the last one's table and every layer's 98th percentile of
    the activations over training (the paper's Fig. 2-4 question)."""
    if not len(stats):
        return box("fastff monitor: no snapshot yet")
    ups = stats.updates

    def draw(axes):
        p98 = stats.scalar("act_p98")
        for k in range(p98.shape[1]):
            axes[0].plot(ups, p98[:, k], label=f"layer {k + 1}")
        axes[0].set(xlabel="updates", ylabel="98th percentile of |h|")
        axes[0].legend(fontsize=7, ncol=2)
    return box(f"fastff monitor: {len(stats)} snapshots, updates {ups[0]}..{ups[-1]}",
               measurement_table(stats[-1]), figure(draw))


def step_stats_html(step_stats):
    """A model's step statistics (:class:`fastff.model.StepStats`): one row per layer."""
    keys, rows = _layer_rows(step_stats.summary(), list(HEADERS),
                             step_stats.activation == "relu")
    return box(f"fastff step statistics: {'-'.join(map(str, step_stats.sizes))} "
               f"{step_stats.activation}", table(["layer"] + [HEADERS[k] for k in keys], rows))


def forward_stats_html(stats):
    """One layer's :class:`fastff.kernels.ForwardStats`."""
    s = stats.summary()
    rows = int(to_host(stats.rows)[0])
    keys, [row] = _layer_rows([s], ["sat_low", "sat_high", "mean", "std", "dead"],
                              stats.activation == "relu")
    return box(f"fastff ForwardStats: {stats.n_units} {stats.activation} units, {rows} rows",
               table([HEADERS[k] for k in keys], [row[1:]]))


def backward_stats_html(stats):
    """One layer's :class:`fastff.kernels.BackwardStats` (dC/dW's spread needs the layer's
    input width: :meth:`fastff.model.StepStats.summary` has it)."""
    counts = to_host(stats.counts)
    s = stats.summary(1)
    return box(f"fastff BackwardStats: {stats.n_units} units, {int(counts[0])} rows, "
               f"{int(counts[1])} steps", table(["std dC/ds"], [[number(s["delta_std"])]]))
