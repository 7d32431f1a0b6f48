"""index.html of a reproduction: Table 1 beside the paper's numbers, then the figures."""
import html

from .glorot2010 import DATASET_TITLES, MODELS, SIGNIFICANCE_LEVEL


def _cell(row):
    if row["test_error"] == "":
        return "n/a"
    text = f"{row['test_error']:.2f}"
    if row["test_error_std"] != "":
        text += f" ± {row['test_error_std']:.2f}"
    text = f"<b>{text}</b>" if row["bold"] else text
    return f"{text} <small>[lr {row['lr']:g}]</small>"


def _experiments(rows):
    """The other experiments' table as HTML ("" without any)."""
    if not rows:
        return ""
    esc = html.escape
    body = []
    for r in rows:
        value = "n/a" if r["test_error"] == "" else f"{r['test_error']:.2f}" + (
            f" <small>[lr {r['lr']:g}]</small>" if r["lr"] != "" else "")
        paper = "" if r["paper_test_error"] == "" else f"{r['paper_test_error']:.2f}"
        other = esc(r["compared_with"]) + ("" if r["compared_test_error"] == ""
                                           else f": {r['compared_test_error']:.2f}")
        p = "" if r["p_value"] == "" else f"{r['p_value']:.3g}"
        body.append(f"<tr><td>{esc(r['experiment'])}</td><td>{esc(r['model'])}</td>"
                    f"<td>{value}</td><td>{paper}</td><td>{other}</td><td>{p}</td>"
                    f"<td>{esc(r['measured'])}</td><td>{esc(r['claim'])}</td></tr>")
    notes = "".join(f"<li>{esc(r['model'])}: {esc(r['note'])}</li>" for r in rows if r["note"])
    return f"""<h2>The paper's other experiments (Shapeset-3x2)</h2>
<p>Test error (%) of each experiment beside the model the paper compares it with; p: the
difference's two-sided p-value (as in Table 1). The paper gives numbers only for the SVM
comparison.</p>
<table><tr><th>experiment</th><th>model</th><th>test error</th><th>paper</th>
<th>compared with</th><th>p</th><th>measured</th><th>the paper's claim</th></tr>
{''.join(body)}
</table>
{f"<ul>{notes}</ul>" if notes else ""}
<p>Files: <a href="experiments.csv">experiments.csv</a>,
<a href="experiments.md">experiments.md</a>.</p>
"""


def _claims(rows):
    """The claims table as HTML ("" without any)."""
    if not rows:
        return ""
    esc = html.escape
    body = "".join(f"<tr><td>{esc(r['claim'])}</td><td>{esc(r['source'])}</td>"
                   f"<td>{esc(r['paper'])}</td><td>{esc(r['fastff'])}</td>"
                   f"<td>{esc(r['verdict'])}</td></tr>" for r in rows)
    tests = "".join(f"<li>{esc(r['claim'])}: {esc(r['test'])}.</li>" for r in rows if r["test"])
    return f"""<h2>The paper's claims</h2>
<p>Each claim beside what these runs measured, and one of three verdicts: agrees, disagrees,
inconclusive. A difference agrees only where it is significant at p &lt; {SIGNIFICANCE_LEVEL} in
the paper's direction, an absence of difference only through an equivalence test with a stated
margin; where the paper names no number the test is fastff's, listed below.</p>
<table><tr><th>claim</th><th>source</th><th>the paper</th><th>fastff</th><th>verdict</th></tr>
{body}
</table>
<ul>{tests}</ul>
<p>Files: <a href="claims.csv">claims.csv</a>, <a href="claims.md">claims.md</a>,
<a href="pairwise.csv">pairwise.csv</a> (every pair's p-value).</p>
"""


def index_html(spec, budget, table, figures, skipped, experiments=(), claims=()):
    """The HTML text of the reproduction's page.

    Parameters
    ----------
    spec : module
        The paper's plan (:mod:`fastff.reproduction.glorot2010`).
    budget : Budget
    table : list of dict
        Table 1 rows.
    figures : list of (file name, caption)
    skipped : dict
        Dataset -> why it was not run.
    experiments : list of dict
        The other experiments' rows (:func:`fastff.reproduction.table.experiments_table`).
    claims : list of dict
        The paper's claims beside the runs' numbers (:mod:`fastff.reproduction.claims`).
    """
    esc = html.escape
    sets = list(dict.fromkeys(r["dataset"] for r in table))
    cells = {(r["dataset"], r["model"]): r for r in table}
    head = "".join(f"<th>{esc(DATASET_TITLES[d])}</th><th>paper</th>" for d in sets)
    body = []
    for model in MODELS:
        tds = [f"<td>{esc(model.name)}</td>"]
        for d in sets:
            r = cells[(d, model.name)]
            paper = r["paper_test_error"]
            tds.append(f"<td>{_cell(r)}</td><td>{'' if paper == '' else f'{paper:.2f}'}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    notes = [f"{DATASET_TITLES[d]} skipped: {why}" for d, why in skipped.items()]
    notes += sorted({f"{DATASET_TITLES[r['dataset']]}, {r['model']}: {r['note']}" for r in table
                     if r["note"] and not r["note"].startswith("skipped")})
    grid = "; ".join(f"{DATASET_TITLES[d]}: {budget.updates[d]:,} updates, lr "
                     f"{', '.join(f'{lr:g}' for lr in budget.lrs[d])}" for d in sets
                     if d not in skipped)
    figs = "\n".join(f'<figure><img src="{esc(name)}" alt="{esc(name)}">'
                     f"<figcaption>{esc(caption)}</figcaption></figure>" for name, caption in figures)
    items = "".join(f"<li>{esc(n)}</li>" for n in notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fastff reproduce {esc(spec.PAPER)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 75em; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
td:first-child {{ text-align: left; }}
figure {{ margin: 2em 0; }} img {{ max-width: 100%; }}
figcaption {{ color: #444; font-size: 0.9em; }}
</style></head><body>
<h1>{esc(spec.TITLE)}: Table 1 with fastff</h1>
<p>Budget <code>{esc(budget.name)}</code>: {esc(budget.about)}. {esc(grid)}. Hidden layers of
{budget.width} units, minibatches of 10, plain SGD, biases at 0, as in the paper.</p>
<h2>Table 1: test error (%)</h2>
<p>Each model at the learning rate with the lowest validation error at the last update (ties
to the smaller rate). <b>Bold</b>: not significantly different from the best of its dataset
(p &ge; {SIGNIFICANCE_LEVEL}); &plusmn; is the standard deviation over seeds. The paper's numbers
come from 5 million updates per run.</p>
<table><tr><th>model</th>{head}</tr>
{''.join(body)}
</table>
{f"<h2>Notes</h2><ul>{items}</ul>" if items else ""}
<p>Files: <a href="table1.csv">table1.csv</a>, <a href="table1.md">table1.md</a>,
<a href="runs/runs.csv">runs/runs.csv</a> (every run), run directories under
<code>runs/</code> (<code>fastff report</code> draws any of them).</p>
{_claims(claims)}
{_experiments(experiments)}
<h2>Figures</h2>
{figs}
</body></html>
"""
