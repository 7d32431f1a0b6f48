"""The seam between the trainer and the kernels: the public kernels exist once, every CUDA
launch names its kernel's parameters as the ``.cu`` source declares them, and ``import fastff``
loads no CUDA code."""
import inspect
import subprocess
import sys

import numpy as np
import pytest

import fastff
from fastff.errors import DeviceError
from fastff.kernels import BackwardStats, ForwardStats, LayerRates, checked, cpu, cuda
from fastff.kernels import reference as ref
from fastff.kernels.cuda import barrier, fused_pass, launchers, step
from fastff.kernels.cuda.compiler import parameters


@pytest.mark.parametrize("op", checked.PUBLIC)
def test_public_kernels_are_one_definition_with_one_signature(op):
    defined = getattr(checked.CheckedKernels, op)
    signature = inspect.signature(getattr(ref, op))
    for namespace in (ref, cpu, cuda, fastff.kernels):
        fn = getattr(namespace, op)
        assert fn.__func__ is defined, namespace.__name__
        assert inspect.signature(fn) == signature, namespace.__name__
        assert fn.__doc__ == defined.__doc__
    assert fastff.kernels.get(op, "cpu") is cpu.__dict__[op]


def test_the_kernel_contracts_are_applied_in_one_place():
    import re
    from pathlib import Path
    root = Path(fastff.__file__).parent
    users = [str(p.relative_to(root)) for p in root.rglob("*.py")
             if re.search(r"\b(forward|backward|second_order|softmax)_args\(", p.read_text())]
    assert sorted(users) == ["kernels/checked.py", "kernels/contracts.py"]


def test_tf32_is_refused_by_kernels_without_tensor_cores():
    x, W, b = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32), np.zeros(5, np.float32)
    for kernels in (cpu, ref, fastff.kernels):
        with pytest.raises(fastff.InputError, match="tf32=True runs products on NVIDIA tensor"):
            kernels.dense_forward(x, W, b, "tanh", tf32=True)
        with pytest.raises(fastff.InputError, match="tf32 must be True or False"):
            kernels.dense_forward(x, W, b, "tanh", tf32="yes")


def test_softmax_takes_grad_z_on_every_backend(rng):
    z = rng.standard_normal((5, 7))
    y = np.array([0, 6, 3, 3, 1])
    for kernels in (ref, cpu, fastff.kernels):
        out = np.empty_like(z)
        loss, grad = kernels.softmax_nll(z, y, grad_z=out)
        assert grad is out and isinstance(loss, float)
        np.testing.assert_allclose(grad, ref.softmax_nll(z, y)[1], rtol=1e-12, atol=1e-15)


# -- every launch's arguments against its kernel's parameters in the .cu source ---------------
POINTER_DTYPES = {"T *": None, "double *": np.float64, "long long *": np.int64,
                  "unsigned *": np.uint32, "unsigned long long *": np.uint64,
                  "float *": np.float32}
SCALAR_DTYPES = {"int": np.int32, "long long": np.int64, "unsigned": np.uint32,
                 "unsigned long long": np.uint64, "float": np.float32, "double": np.float64}


class RecordingRuntime(cuda.Runtime):
    """A runtime on NumPy arrays that records launches and runs none."""

    sms = 4

    def __init__(self):
        self.launches = []

    def launch(self, name, grid, block, args, cooperative=False):
        self.launches.append((name, args))

    def resident(self, name, threads):
        return 8


def _check_arguments(name, args):
    """Each argument of launch ``name`` has the kind and width of its parameter."""
    base, _, rest = name.partition("<")
    T = np.dtype({"float": np.float32, "double": np.float64}.get(rest.split(",")[0].rstrip(">"),
                                                                 np.float32))
    params = parameters()[base]
    assert len(args) == len(params), name
    for (ctype, pname), a in zip(params, args):
        if ctype.endswith("*"):
            want = POINTER_DTYPES[ctype] or T
            assert isinstance(a, np.ndarray) and a.ndim > 0, (name, pname)
            assert a.dtype.itemsize == np.dtype(want).itemsize, (name, pname, a.dtype, ctype)
        else:
            want = T if ctype == "T" else SCALAR_DTYPES[ctype]
            assert isinstance(a, np.generic) and a.dtype == want, (name, pname, type(a), ctype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_launcher_passes_its_kernel_s_parameters(monkeypatch, rng, dtype):
    rt = RecordingRuntime()
    monkeypatch.setattr(cuda.runtimes, "_RUNTIME", rt)
    B, K, N = 7, 13, 11
    x = rng.standard_normal((B, K)).astype(dtype)
    W, b = rng.standard_normal((K, N)).astype(dtype), np.zeros(N, dtype)
    h = np.tanh(x @ W)
    for stats in (None, ForwardStats(N, "tanh")):
        launchers.forward_unchecked(x, W, b, "tanh", stats=stats)
    for stats in (None, BackwardStats(N, weight_grad=True)):
        launchers.backward_unchecked(x, h, W, b, h, "tanh", 0.1, stats=stats)
    for method in ("diag_hessian", "grad_variance"):
        rates = LayerRates(K, N, method, dtype)
        launchers.second_order_unchecked(x, h, W, b, h, "tanh", 0.1, rates,
                                         curv_h=h if method == "diag_hessian" else None,
                                         stats=BackwardStats(N))
    y = np.zeros(B, np.int64)
    launchers.softmax_nll_unchecked(h, y)
    launchers.softmax_quadratic_unchecked(h, y)
    if dtype == np.float32:
        from fastff.kernels.cuda import shapeset
        shapeset.render((1, 2), 0, 3, True, (1.0, 0.0))
    net = fastff.MLP("13-11-5", activation="tanh", dtype=np.dtype(dtype).name, seed=0)
    params = [(W_.copy(), b_.copy()) for W_, b_ in net.params]
    ws = dict(h=[np.empty((B, n), dtype) for n in (11, 5)],
              delta=[np.empty((B, n), dtype) for n in (11, 5)])
    step.StepLaunch(params, "tanh", B, ws, None, "nll", rt=rt).run(x, y, 0.1)
    # three layers: the output's forward with the cost (float32), a dC/dx beside an update
    # (float32), two updates
    sizes = (K, N, 9, 5)
    params = [(rng.standard_normal((k, n)).astype(dtype), np.zeros(n, dtype))
              for k, n in zip(sizes, sizes[1:])]
    hs = [np.tanh(rng.standard_normal((B, n))).astype(dtype) for n in sizes[1:-1]]
    ws = dict(grad_z=np.empty((B, 5), dtype), delta=[np.empty((B, n), dtype) for n in sizes[1:]],
              h=[np.empty((B, n), dtype) for n in sizes[1:]])
    for stats in ([None] * 3, [BackwardStats(n, weight_grad=True) for n in sizes[1:]]):
        fused_pass.output_and_backward("nll", x, y, hs, params, ["tanh", "tanh", "linear"], 0.1,
                                       stats, ws)
    barrier.barrier_rounds(12, rt=rt)
    launched = {name.partition("<")[0] for name, _ in rt.launches}
    rendered = {"shapeset_render"} if dtype == np.float64 else set()  # float32 images only
    # float32 only
    paired = {"grad_x_and_update", "dense_forward_and_cost"} if dtype == np.float64 else set()
    assert launched == set(parameters()) - rendered - paired, set(parameters()) - launched
    for name, args in rt.launches:
        _check_arguments(name, args)


def test_a_launch_that_misnames_a_parameter_is_refused(monkeypatch):
    rt = RecordingRuntime()
    z = np.zeros((2, 3))
    with pytest.raises(DeviceError, match="leaves out its parameter 'K'"):
        rt.launch_named("softmax_nll<double>", (1,), (8,), z=z, y=z, grad=z, loss=z,
                        B=np.int32(2), b=z, lr=z, bias_step=np.int32(0))
    with pytest.raises(DeviceError, match=r"names \['k'\], which it does not take"):
        rt.launch_named("softmax_nll<double>", (1,), (8,), z=z, y=z, grad=z, loss=z,
                        B=np.int32(2), K=np.int32(3), b=z, lr=z, bias_step=np.int32(0), k=1)
    assert not rt.launches


def test_compile_options_are_made_once_for_a_set_of_settings(monkeypatch):
    from fastff import config
    from fastff.kernels.cuda import compiler
    first = compiler.compile_options()
    assert compiler.compile_options() is first
    monkeypatch.setattr(config, "CUDA_UPDATE_TILE", 16)
    assert "-DFASTFF_UT=16" in compiler.compile_options()
    monkeypatch.setattr(config, "CUDA_UPDATE_TILE", 12)
    with pytest.raises(fastff.InputError, match="CUDA_UPDATE_TILE must be a power of two"):
        compiler.compile_options()


def test_cuda_rooms_are_small():
    from pathlib import Path
    room = Path(cuda.__file__).parent
    big = {p.name: n for p in room.glob("*.py")
           if (n := len(p.read_text().splitlines())) > 400}
    assert not big, big


def test_import_fastff_loads_no_cuda_code_and_warns_nothing():
    code = ("import sys, fastff; "
            "print(sorted(m for m in sys.modules if m.startswith('fastff.kernels.cuda') "
            "or m.split('.')[0] == 'cupy'))")
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout.strip() == "[]"


# -- the house: which room may import which ----------------------------------------------------
# A module may import modules of its own floor or below, never above; and no circle, on any
# floor. CONTRIBUTING.md ("The house") describes the same floors.
FLOORS = [
    {"errors", "config", "arrays", "checks", "files", "_version", "activations", "softmax",
     "shapeset_spec", "losses", "arch", "init", "device", "flags", "pytorch",
     "notebook"},                                                     # leaves
    {"kernels"},                                                     # the fused kernels
    {"model", "monitor", "data"},                                    # a net, its measurements, data
    {"record", "baselines"},                                         # a run's folder; the SVMs
    {"training"},                                                    # train, train_many
    {"report", "sweeps"},                                            # figures; grids on Dask
    {"export", "reproduction"},                                      # the paper, end to end
    {"cli", "fastff"},                                               # the command; the package
]


def _import_graph():
    """{module: modules of fastff it imports}, counting imports inside functions too."""
    import ast
    from pathlib import Path
    root = Path(fastff.__file__).parent
    mods = {}
    for p in root.rglob("*.py"):
        parts = list(p.relative_to(root.parent).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph = {}
    for m, p in mods.items():
        package = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = (".".join(base + [node.module] if node.module else base)
                          if node.level else node.module or "")
                found |= {f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target
                          for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[m] = {t for t in found if t in mods and t != m}
    return graph


def _room(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "fastff"


def test_the_import_graph_has_no_circle_and_no_upward_arrow():
    graph = _import_graph()
    floor = {room: i for i, rooms in enumerate(FLOORS) for room in rooms}
    rooms = {_room(m) for m in graph}
    assert rooms <= set(floor), f"rooms without a floor: {sorted(rooms - set(floor))}"
    upward = [f"{a} -> {b}" for a, targets in graph.items() for b in targets
              if floor[_room(b)] > floor[_room(a)]]
    assert not upward, "\n".join(sorted(upward))
    # circles: a module that reaches itself (the package __init__s' own re-exports aside)
    def reach(start):
        seen, todo = set(), [t for t in graph[start] if not start.startswith(t + ".")]
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += [t for t in graph[m] if not m.startswith(t + ".")]
        return seen
    circles = sorted(m for m in graph if m in reach(m))
    assert not circles, circles


# -- the typed options -------------------------------------------------------------------------
def test_train_shows_its_real_parameters_those_of_the_typed_options():
    from dataclasses import FrozenInstanceError, fields
    from fastff.training import TrainOptions, options
    params = inspect.signature(fastff.train).parameters
    assert list(params)[0] == "arch"
    keywords = [p for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    table = [f for f in fields(TrainOptions) if f.init]
    assert [(p.name, p.default) for p in keywords] == [(f.name, f.default) for f in table]
    assert [o.name for o in options.OPTIONS] == [f.name for f in table]
    assert "kwargs" not in str(inspect.signature(fastff.train))
    v = TrainOptions(lr=0.1, optimizer="diag_hessian", updates=50)
    with pytest.raises(FrozenInstanceError):
        v.lr = 0.2
    assert v.derived.rates == dict(damping=fastff.config.SECOND_ORDER_DAMPING["diag_hessian"],
                                   decay=fastff.config.SECOND_ORDER_DECAY)
    assert v.damping is None  # the option as given; what the run uses is derived
    with pytest.raises(fastff.InputError, match="lr must be a positive number"):
        TrainOptions(lr=-1)
    with pytest.raises(fastff.InputError, match="unknown option.*'learning_rate'"):
        options.check({"learning_rate": 0.1})


def test_a_trainer_takes_typed_options_and_never_changes_them(tmp_path):
    from fastff.training import TrainOptions, Trainer
    v = TrainOptions(updates=20, batch_size=6, progress=False, out_dir=str(tmp_path / "run"),
                     dataset="shapeset", data_options={"valid_size": 50, "test_size": 50})
    before = v.as_dict()
    trainer = Trainer([8], v)
    run = trainer.run()
    assert trainer.v is v and v.as_dict() == before and v.eval_every is None
    assert trainer.cadence.eval_every == 2 and run.config["eval_every"] == 2


def test_the_commands_flags_are_their_functions_keywords():
    from fastff.flags import check_table
    from fastff.reproduction import REPRODUCE_FLAGS
    from fastff.sweeps import SWEEP_FLAGS
    for function, flags, positional in ((fastff.sweep, SWEEP_FLAGS, ("grid",)),
                                        (fastff.reproduce, REPRODUCE_FLAGS, ("paper",))):
        check_table(function, flags, positional)
        for f in flags:
            assert f"    {f.name} :" in function.__doc__, (function.__name__, f.name)
    from fastff.cli import build_parser
    parser = build_parser()
    args = parser.parse_args(["reproduce", "glorot2010", "--quiet", "--no-train", "--out", "x",
                              "--widen", "2"])
    from fastff.flags import flag_values
    given = flag_values(args, REPRODUCE_FLAGS)
    assert (given["progress"], given["train"], given["out_dir"], given["widen"]) == \
        (False, False, "x", 2)
    with pytest.raises(fastff.InputError, match="are not its keywords"):
        check_table(fastff.sweep, SWEEP_FLAGS[1:], ("grid",))


def test_nothing_outside_the_kernels_imports_the_cuda_kernels():
    graph = _import_graph()
    outside = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                     if b.startswith("fastff.kernels.cuda") and _room(a) != "kernels")
    assert not outside, outside


def test_a_prepared_launch_is_checked_once_and_changes_only_what_it_is_told():
    from fastff.kernels.cuda.arguments import PackedArgs
    rt = RecordingRuntime()
    barrier = np.zeros(6, np.uint32)
    prepared = rt.prepare("barrier_rounds", (4,), (32,), cooperative=True, barrier=barrier,
                          rounds=np.int32(3))
    prepared.launch()
    prepared.set(rounds=np.int32(5))
    prepared.launch()
    assert [(name, args[0] is barrier, int(args[1])) for name, args in rt.launches] == [
        ("barrier_rounds", True, 3), ("barrier_rounds", True, 5)]
    with pytest.raises(DeviceError, match="takes no parameter 'round'"):
        prepared.set(round=np.int32(1))
    with pytest.raises(DeviceError, match="leaves out its parameter 'rounds'"):
        rt.prepare("barrier_rounds", (1,), (1,), barrier=barrier)
    # CUDA's form, packed once: an array's address, a scalar's value; one replaced in place
    import ctypes
    a, b = np.arange(4, dtype=np.float32), np.zeros(3, np.float32)
    packed = PackedArgs((a, np.int32(7)), lambda v: v.ctypes.data)

    def value(i, ctype):
        return ctypes.cast(packed.params[i], ctypes.POINTER(ctype)).contents.value
    assert value(0, ctypes.c_void_p) == a.ctypes.data and value(1, ctypes.c_int32) == 7
    packed.update(0, b)
    packed.update(1, np.int32(9))
    assert value(0, ctypes.c_void_p) == b.ctypes.data and value(1, ctypes.c_int32) == 9
