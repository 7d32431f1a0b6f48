"""Widening a reproduction's grids and adding its seeds: after the runs, a chosen learning rate
at the edge of its grid gets a run one rung beyond it (and the rate is chosen again), and the
chosen rates of the seeded models get their budget's seeds."""
from .table import choose_lr, grid_edge


def widened_runs(spec, runs, points, rounds, progress):
    """The points and the runs' rows after ``rounds`` of widening: a chosen rate at its grid's
    edge gets a run one rung beyond it, and the rate is chosen again."""
    rows = runs(points)
    for _ in range(rounds):
        extra = spec.widened(points, rows, grid_edge)
        if not extra:
            break
        if progress:
            print("widening the grid: " + "; ".join(dict.fromkeys(
                f"{why}, so {p['lr']:g} too" for p, why in extra)), flush=True)
        points = points + [p for p, _ in extra]
        rows = runs(points)
    return points, rows


def seeded_runs(spec, runs, points, rows, counts, progress):
    """The rows once the chosen rates of the seeded models have their budget's seeds
    (``counts``: dataset -> seeds in all; None: none added)."""
    extra = spec.seeded(points, rows, choose_lr, counts) if counts else []
    if not extra:
        return rows
    if progress:
        print(f"seeds: {len(extra)} runs give the chosen rates of "
              f"{', '.join(spec.SEEDED_MODELS)} their budget's seeds", flush=True)
    return runs(points + extra)
