"""index.html: the figures of a report beside the configurations of its runs."""
import html

CONFIG_KEYS = ("dataset", "arch", "activation", "init", "lr", "batch_size", "updates", "seed",
               "device", "dtype", "monitor_every")


def _final_test_error(run):
    u, err = run.series("eval", "test_error")
    return f"{100 * err[-1]:.2f}% at update {u[-1]}" if len(u) else "n/a"


def index_html(runs, figures, skipped):
    """The HTML text of the report page.

    Parameters
    ----------
    runs : list of RunData
    figures : list of (file name, caption)
    skipped : list of (file name, reason)
    """
    esc = html.escape
    head = "".join(f"<th>{esc(k)}</th>" for k in ("run",) + CONFIG_KEYS + ("final test error",))
    body = []
    for run in runs:
        cells = [esc(str(run.path))] + [esc(str(run.config.get(k, ""))) for k in CONFIG_KEYS]
        cells.append(esc(_final_test_error(run)))
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    figs = "\n".join(f'<figure><img src="{esc(name)}" alt="{esc(name)}">'
                     f"<figcaption>{esc(caption)}</figcaption></figure>" for name, caption in figures)
    notes = "".join(f"<li>{esc(name)}: {esc(reason)}</li>" for name, reason in skipped)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fastff report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 70em; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.5em; }}
figure {{ margin: 2em 0; }} img {{ max-width: 100%; }}
figcaption {{ color: #444; font-size: 0.9em; }}
</style></head><body>
<h1>fastff report</h1>
<p>Figures after Glorot &amp; Bengio (2010), "Understanding the difficulty of training deep
feedforward neural networks". Monitor statistics are measured on the first 300 test examples.</p>
<h2>Runs</h2>
<table><tr>{head}</tr>
{''.join(body)}
</table>
{f"<h2>Not drawn</h2><ul>{notes}</ul>" if notes else ""}
<h2>Figures</h2>
{figs}
</body></html>
"""
