"""The compile gate: every CUDA kernel instance compiles with NVRTC for sm_80 and sm_90 with
ptxas warnings as errors (no spills, no local memory), within the registers and shared memory
its launches assume. Needs CuPy's NVRTC, not a GPU; CI installs it and must run this."""
import os

import pytest

from fastff import config
from fastff.errors import DeviceError
from fastff.kernels import cuda

REGISTERS_PER_SM = 65536  # sm_80 and sm_90


@pytest.fixture(scope="module")
def nvrtc():
    try:
        from cupy.cuda import nvrtc
        nvrtc.getVersion()
    except Exception as exc:  # ImportError, or a CuPy without its NVRTC library
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the CUDA compile gate, but CuPy's NVRTC is missing: {exc}")
        pytest.skip(f"the compile gate needs CuPy's NVRTC (pip install '.[test]'): {exc}")
    return nvrtc


def _table(arch, rows):
    head = f"{'kernel (' + arch + ')':<40} {'regs':>5} {'threads':>8} {'smem B':>7} {'stack':>6} {'spills':>7}"
    lines = [head] + [f"{r['kernel']:<40} {r['registers']:>5} {r['threads']:>8} {r['smem']:>7} "
                      f"{r['stack']:>6} {r['spill_stores'] + r['spill_loads']:>7}" for r in rows]
    return "\n".join(lines)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_every_kernel_compiles_within_its_budget(nvrtc, arch, capsys):
    rows = cuda.compile_report(arch)
    with capsys.disabled():  # the resource table belongs in the CI log
        print("\n" + _table(arch, rows))
    assert [r["kernel"] for r in rows] == cuda.name_expressions()
    for r in rows:
        assert r["stack"] == r["spill_stores"] == r["spill_loads"] == 0, r
        # the blocks per SM each kernel's __launch_bounds__ promises must fit the register file
        assert r["registers"] * r["threads"] * r["blocks_per_sm"] <= REGISTERS_PER_SM, r
        assert r["smem"] <= cuda.STATIC_SHARED_BYTES, r


def test_the_step_compiles_for_every_row_count_within_its_budget(nvrtc, capsys):
    # the persistent step at batches under config.CUDA_STEP_MAX_BATCH: the instances a GPU
    # compiles when a batch first asks for them (every activation shares their registers)
    from fastff.kernels.cuda.compiler import step_name, step_rows
    most = config.CUDA_STEP_MAX_BATCH
    rows_counts = sorted({step_rows(b) for b in range(1, most + 1)} - {most})
    assert rows_counts == [4, 8, 12]  # and the most rows, 16, in the module itself
    names = [step_name(t, "tanh", r) for t in ("float", "double") for r in rows_counts]
    rows = cuda.compile_report("sm_80", names=names)
    with capsys.disabled():
        print("\n" + _table("sm_80", rows))
    assert [r["kernel"] for r in rows] == names
    for r in rows:
        assert r["stack"] == r["spill_stores"] == r["spill_loads"] == 0, r
        assert r["registers"] * r["threads"] * r["blocks_per_sm"] <= REGISTERS_PER_SM, r


def test_gpus_without_tf32_still_build_every_kernel(nvrtc):
    # sm_75 (Turing) has no TF32: its PTX is behind __CUDA_ARCH__ >= 800, and the host refuses
    # tf32=True there, so float32 training without it still builds and runs
    rows = cuda.compile_report("sm_75")
    assert [r["kernel"] for r in rows] == cuda.name_expressions()


def test_the_gate_fails_on_a_kernel_that_uses_local_memory(nvrtc):
    # break one on purpose: an accumulator indexed at run time must live in local memory
    anchor = "  double g_sum = 0.0, g_sq = 0.0;\n"
    src = cuda.source()
    assert anchor in src
    broken = src.replace(anchor, "  acc[tx % 4][ty % 4] += T(1);\n" + anchor, 1)  # update_tile
    with pytest.raises(DeviceError, match="Local memory used|spilled"):  # one of its kernels
        cuda.compile_report("sm_90", src=broken, names=["dense_backward_update<float>"])


def test_cuda_sources_need_no_cupy_to_be_read():
    assert "dense_forward_fused" in cuda.source()
    # 52 of the kernels (two_updates in both types, grad_x_and_update in float32),
    # shapeset_render, barrier_rounds
    assert len(cuda.name_expressions()) == 56
    assert any(d.startswith("-DFASTFF_TM=") for d in cuda.defines())
