"""Which runs a reproduction's table chose, and their paired test outcomes."""
from pathlib import Path

from ..errors import FastffError
from ..record import RunDir
from . import glorot2010


def chosen_runs(rows, table, dataset):
    """{model name: run folder} of one dataset's chosen runs (the first seed of the chosen
    learning rate), in the table's order (Table 1's rows, or those and the experiments')."""
    out = {}
    for t in table:
        if t["dataset"] != dataset or t["lr"] == "":
            continue
        model = glorot2010.MODEL_BY_NAME[t["model"]]
        for r in rows:
            if (r["dataset"] == dataset and glorot2010.model_of(r) == model
                    and float(r["lr"]) == t["lr"] and r["status"] == "done"):
                out[t["model"]] = r["name"]
                break
    return out


def test_outcomes(runs_dir, row):
    """A sweep row's run's test outcomes at its last update (None where it has none)."""
    try:
        kept = RunDir(Path(runs_dir) / row["name"]).load_test_outcomes()
    except FastffError:
        return None
    if kept is None or kept[0] != row.get("updates_done"):
        return None
    return kept[1]
