"""Sweeps on a real Dask LocalCluster with worker processes."""
import csv
import json
import os
import threading
import time

import numpy as np
import pytest

import fastff
from fastff.errors import InputError
from fastff.record import RunDir
from fastff.sweeps import expand, finished, run_name, varying

distributed = pytest.importorskip("distributed") if not os.environ.get("CI") else __import__("distributed")

SMALL = dict(dataset="shapeset", data_options=dict(valid_size=50, test_size=50), updates=40,
             eval_every=20, monitor_every=20)
GRID = dict(arch="16x2", activation=["tanh", "softsign"], init=["standard", "normalized"],
            lr=0.05, **SMALL)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_expand_is_every_combination_in_order():
    points = expand(dict(activation=["tanh", "sigmoid"], lr=[0.1, 0.01], updates=5))
    assert points == [dict(activation=a, lr=l, updates=5) for a in ("tanh", "sigmoid")
                      for l in (0.1, 0.01)]
    with pytest.raises(InputError, match="unknown train.. argument lrate"):
        expand(dict(lrate=[0.1]))
    with pytest.raises(InputError, match="empty"):
        expand(dict(lr=[]))


def test_a_list_of_grids_is_swept_together_and_names_say_what_varies(tmp_path):
    grids = [dict(arch="8x5", activation=["tanh", "softsign"], lr=0.1),
             dict(arch="8x4", activation="sigmoid", lr=[0.1, 0.03])]
    points = expand(grids)
    assert points == [dict(arch="8x5", activation="tanh", lr=0.1),
                      dict(arch="8x5", activation="softsign", lr=0.1),
                      dict(arch="8x4", activation="sigmoid", lr=0.1),
                      dict(arch="8x4", activation="sigmoid", lr=0.03)]
    assert varying(points) == ["arch", "activation", "lr"]
    names = [run_name(p, varying(points)) for p in points]
    assert names[0].startswith("arch=8x5,activation=tanh,lr=0.1-") and len(set(names)) == 4
    # dict values stay out of the name; the hash still tells the points apart
    a, b = (dict(lr=0.1, data_options=dict(valid_size=n)) for n in (10, 20))
    assert run_name(a, ["lr", "data_options"]).split("-")[0] == "lr=0.1"
    assert run_name(a, ["lr", "data_options"]) != run_name(b, ["lr", "data_options"])
    # a point that names the sequential Shapeset stream is the point of a sweep planned before
    # points named it (its runs were drawn from that stream); the counter stream is another point
    seq, old, counter = (dict(a, data_options=dict(valid_size=10, **g)) for g in
                         ({"generator": "sequential"}, {}, {"generator": "counter"}))
    assert run_name(seq, ["lr"]) == run_name(old, ["lr"]) != run_name(counter, ["lr"])
    for point, match in ((seq, True), (old, True), (counter, False)):
        status = tmp_path / "sweep_status.json"
        status.write_text(json.dumps({"status": "done", "point": old}))
        assert (finished(tmp_path, point) is not None) == match
    for bad in ([], [dict(lr=0.1), "lr"]):
        with pytest.raises(InputError, match="non-empty"):
            expand(bad)


def test_a_sweep_trains_every_point_and_records_runs_csv(client, tmp_path):
    rows = fastff.sweep(GRID, tmp_path, scheduler=client, progress=False)
    assert [r["status"] for r in rows] == ["done"] * 4
    table = list(csv.DictReader(open(tmp_path / "runs.csv")))
    assert [(t["activation"], t["init"], t["status"]) for t in table] == [
        (a, i, "done") for a in ("tanh", "softsign") for i in ("standard", "normalized")]
    assert {"valid_error", "test_error", "updates_done", "seconds", "lr", "arch"} <= set(table[0])
    # each point is an ordinary run directory, with the numbers train() itself gives
    direct = fastff.train(**{**expand(GRID)[0]}, progress=False)
    state = RunDir(tmp_path / table[0]["name"]).load_checkpoint()[0]
    for l, (W, _) in enumerate(direct.model.params):
        np.testing.assert_array_equal(state[f"W{l}"], W)
    assert float(table[0]["test_error"]) == direct.final["test_error"]
    # run again: every finished run is skipped, nothing is rewritten
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/checkpoint.npz")}
    again = fastff.sweep(GRID, tmp_path, scheduler=client, progress=False)
    assert again == rows
    assert stamps == {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/checkpoint.npz")}


def test_diverged_and_failed_runs_are_rows_not_the_end(client, tmp_path):
    grid = dict(arch=["64x3", "784-20-10"], activation="relu", lr=[0.01, 1e6], **SMALL)
    rows = fastff.sweep(grid, tmp_path, scheduler=client, progress=False)
    status = {(r["arch"], r["lr"]): r["status"] for r in rows}
    assert status[("784-20-10", 0.01)] == status[("784-20-10", 1e6)] == "failed"
    assert status[("64x3", 1e6)] == "diverged" and status[("64x3", 0.01)] == "done"
    failed = next(r for r in rows if r["status"] == "failed")
    assert "dataset has 1024 inputs" in failed["message"]


def test_runs_keep_their_folders_when_the_sweep_gains_a_varying_key(tmp_path):
    # the reproduction adds seeds to a grid of one seed: "seed" starts to vary and every run's
    # name changes; the runs already there are found by the hash of their point, finished or
    # not, and only the new points get new folders
    from fastff.reproduction.estimate import remaining
    from fastff.sweeps import collect, run_names
    one = dict(arch="8x2", lr=[0.1, 0.3], seed=0, updates=100)
    first = run_names(expand(one), tmp_path)
    for name, point in zip(first, expand(one)):
        (tmp_path / name).mkdir()
    (tmp_path / first[0] / "sweep_status.json").write_text(json.dumps(
        {"status": "done", "point": expand(one)[0]}))
    more = dict(one, seed=[0, 1])
    names = run_names(expand(more), tmp_path)
    assert names[0] == first[0] and names[2] == first[1]  # seed 0 of each rate: their folders
    assert names[1].startswith("lr=0.1,seed=1-") and names[1] not in first
    rows = collect(more, tmp_path)
    assert [r["status"] for r in rows] == ["done", "", "", ""]
    assert [p["seed"] for p, _ in remaining(expand(more), tmp_path)] == [1, 0, 1]
    # a finished run is preferred to a folder of the new name that began it again
    (tmp_path / run_name(expand(more)[0], varying(expand(more)))).mkdir()
    assert run_names(expand(more), tmp_path)[0] == first[0]


def test_a_sweep_resumes_an_unfinished_run_from_its_checkpoint(client, tmp_path):
    from fastff.sweeps import run_name
    point = {**GRID, "activation": "tanh", "init": "normalized"}
    run_dir = tmp_path / run_name(point, [])
    fastff.train(**{**point, "updates": 20}, out_dir=run_dir, progress=False)  # stopped early
    rows = fastff.sweep(point, tmp_path, scheduler=client, progress=False)
    assert rows[0]["status"] == "done" and rows[0]["updates_done"] == 40
    assert rows[0]["resumed_from"] == 20
    assert json.loads((run_dir / "sweep_status.json").read_text())["updates_done"] == 40
    state, update, history = RunDir(run_dir).load_checkpoint()
    assert [h["update"] for h in history] == [0, 20, 40]
    direct = fastff.train(**point, progress=False)
    for l, (W, _) in enumerate(direct.model.params):
        np.testing.assert_array_equal(state[f"W{l}"], W)


def test_a_killed_worker_loses_only_its_progress(tmp_path):
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")
    client = distributed.Client(cluster)
    point = dict(arch="200x3", activation="tanh", lr=0.05, updates=3000, eval_every=100,
                 monitor_every=0, dataset="shapeset", data_options=dict(valid_size=50, test_size=50))
    result = {}
    thread = threading.Thread(target=lambda: result.update(
        rows=fastff.sweep(point, tmp_path, scheduler=client, progress=False)))
    try:
        thread.start()
        deadline, killed = time.monotonic() + 300, None
        while killed is None and time.monotonic() < deadline:
            ckpt = list(tmp_path.glob("*/checkpoint.npz"))
            if ckpt:
                try:
                    update = RunDir(ckpt[0].parent).load_checkpoint()[1]
                except Exception:
                    update = 0
                busy = [w for w, keys in client.processing().items() if keys]
                if update >= 300 and busy:
                    killed = update
                    try:
                        client.run(os._exit, 1, workers=busy)  # the worker dies mid-run
                    except Exception:  # it died before it could answer: as meant
                        pass
            time.sleep(0.05)
        thread.join(timeout=600)
    finally:
        client.close()
        cluster.close()
    assert killed is not None, "the run finished before its worker could be killed"
    rows = result["rows"]
    assert rows[0]["status"] == "done" and int(rows[0]["updates_done"]) == 3000
    assert int(rows[0]["resumed_from"]) >= killed  # resumed from its checkpoint, not restarted
    history = RunDir(next(tmp_path.glob("*/checkpoint.npz")).parent).load_checkpoint()[2]
    assert [h["update"] for h in history] == list(range(0, 3001, 100))
    direct = fastff.train(**point, progress=False)
    state = RunDir(next(tmp_path.glob("*/checkpoint.npz")).parent).load_checkpoint()[0]
    for l, (W, _) in enumerate(direct.model.params):
        np.testing.assert_array_equal(state[f"W{l}"], W)  # the same bits as without the kill


def test_cli_sweep(tmp_path, capsys):
    from fastff import cli
    spec = json.dumps({"arch": "8", "init": ["standard", "normalized"], **SMALL, "updates": 10,
                       "eval_every": 5, "monitor_every": 0})
    assert cli.main(["sweep", spec, "--out", str(tmp_path), "--workers", "2", "--quiet"]) == 0
    assert "2 runs: 2 done, 0 diverged, 0 failed" in capsys.readouterr().out
    assert len(list(csv.DictReader(open(tmp_path / "runs.csv")))) == 2
    assert cli.main(["sweep", "{not json", "--out", str(tmp_path), "--quiet"]) == 2
    assert "SPEC must be a JSON file or JSON text" in capsys.readouterr().err
    assert cli.main(["sweep", '{"lrate": [1]}', "--out", str(tmp_path), "--quiet"]) == 2
    assert "unknown train() argument lrate" in capsys.readouterr().err


def test_runs_on_gpus_are_packed_by_shape_and_others_go_alone():
    from fastff.sweeps import packs
    todo = [(f"r{i}", dict(device=d, arch=a, lr=i)) for i, (d, a) in enumerate(
        [("cuda", "9x2"), ("cpu", "9x2"), ("cuda", "7x3"), ("cuda", "9x2"), ("cuda", "9x2")])]
    got = [[n for n, _ in pack] for pack in packs(todo, 2)]
    assert got == [["r1"], ["r2", "r0"], ["r3", "r4"]]  # sorted by shape, then cut
    assert sorted(n for pack in packs(todo, 16) for n, _ in pack) == [n for n, _ in todo]


def test_every_gpu_worker_gets_a_pack():
    # the paper budget's 90 runs of a Table 1: 6 packs of 15 on one GPU (not 5 of 16 and one
    # of 10), 8 packs of 12 on 8 GPUs (none idle); 180 runs on 8 GPUs: two rounds of packs of
    # 12, not 16 and 7; a pack given is kept; no workers known: the configured size
    from fastff import config
    from fastff.sweeps import pack_size
    assert config.SWEEP_GPU_PACK == 16
    assert [pack_size(90, w) for w in (1, 2, 8, 90, 200)] == [15, 15, 12, 1, 1]
    assert pack_size(180, 8) == 12 and pack_size(16, 1) == 16 and pack_size(17, 1) == 9
    assert pack_size(90, 8, pack=30) == 30 and pack_size(90, 0) == pack_size(0, 8) == 16


def test_local_workers_start_with_this_process_malloc_settings(monkeypatch):
    # Dask's nannies set MALLOC_TRIM_THRESHOLD_, which pins glibc's mmap threshold: every
    # evaluation block then faults in fresh pages; a sweep's own cluster leaves it out
    from fastff.sweeps import _client
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    client, cluster, threads = _client(None, 2)
    try:
        seen = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
        assert list(seen.values()) == [None, None] and threads == max(1, os.cpu_count() // 2)
        assert "MALLOC_TRIM_THRESHOLD_" not in os.environ  # nor set here for later processes
    finally:
        client.close()
        cluster.close()


def test_the_gpu_cluster_gives_each_worker_one_gpu():
    # one worker per GPU: worker i sees GPU i alone (nothing here needs a GPU to check that)
    from fastff.sweeps import gpu_cluster
    cluster = gpu_cluster(2)
    try:
        with distributed.Client(cluster) as c:
            seen = c.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        assert sorted(seen.values()) == ["0", "1"]
    finally:
        cluster.close()
    with pytest.raises(InputError, match="workers"):
        gpu_cluster(0)
