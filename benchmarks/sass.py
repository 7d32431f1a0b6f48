"""The SASS of fastff's CUDA kernels, read without a GPU: what one iteration of each inner loop
issues, for the cost model's forecast (benchmarks/gpu_model.py).

The kernels are compiled as the backend compiles them (NVRTC, the backend's options,
:mod:`fastff.kernels.cuda.compiler`) for one architecture, and the cubin is disassembled with
``cuobjdump -sass`` (``pip install nvidia-cuda-cuobjdump`` puts it in the environment; a CUDA
toolkit's works too; it runs ``nvdisasm``, from ``nvidia-cuda-nvdisasm``). A loop is a backward branch; an innermost loop holds no other. Each is
counted by kind of instruction: loads and stores of global memory, shared loads and stores, FP32 and
FP64 arithmetic, atomics and the rest (addresses, predicates, moves).

Run: ``python benchmarks/sass.py [--arch sm_90] [--kernel "train_steps<float, 1>"]``.
"""
import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

# the kinds of instruction, by the opcode's stem (the part before the first dot)
# (LD and ST: generic addresses, which the step's pointers from its layer table are; they go
# through L1 and L2 as LDG and STG do)
KINDS = {"LDG": "load", "LD": "load", "STG": "store", "ST": "store", "LDS": "shared load",
         "STS": "shared store", "FFMA": "fp32", "FADD": "fp32", "FMUL": "fp32",
         "HMMA": "tensor", "DFMA": "fp64", "DADD": "fp64", "DMUL": "fp64",
         "ATOMG": "atomic", "RED": "atomic", "ATOM": "atomic", "BAR": "barrier",
         "MEMBAR": "fence", "FENCE": "fence", "LDC": "constant load", "BRA": "branch"}
LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")
FUNCTION = re.compile(r"Function : (\S+)")


def find_tool(name):
    """The path of a CUDA tool (``cuobjdump``, ``nvdisasm``): on PATH, or where the
    ``nvidia-cuda-<name>`` wheel installs it beside this Python; None where there is none."""
    found = shutil.which(name)
    if found:
        return found
    for base in map(Path, sys.path):
        for candidate in base.glob(f"nvidia/cu*/bin/{name}"):
            return str(candidate)
    return None


def find_cuobjdump():
    """cuobjdump's path where it can disassemble (it runs nvdisasm, which must be found too:
    ``pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm``); None otherwise."""
    if find_tool("nvdisasm") is None:
        return None
    return find_tool("cuobjdump")


def _whole_elf(cubin):
    """The cubin with its last bytes restored: CuPy's ``getCUBIN`` returns it as a C string,
    one byte short (a NUL) of the program headers' end."""
    phoff, = struct.unpack_from("<Q", cubin, 0x20)
    shoff, = struct.unpack_from("<Q", cubin, 0x28)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", cubin, 0x36)
    end = max(phoff + phentsize * phnum, shoff + shentsize * shnum)
    return cubin + b"\0" * max(0, end - len(cubin))


# the cubins compiled in this process: {(names, arch, source, options): (cubin, lowered)}
_CUBINS = {}
# compiles of one program that may disagree before its schedule is taken as the compiler's
COMPILE_TRIES = 5


def compile_cubin(names, arch="sm_90"):
    """(cubin bytes, {template instance: lowered name}) of ``names`` compiled as the backend
    compiles them.

    The compiler does not always schedule one program the same way: on a busy machine about
    one compile in ten gave the same instructions in another order, which moves a loop's
    chain of latencies (benchmarks/NOTES.md, "The SASS reader and the compiler's other
    schedules"). So the cubin returned is the first that two compiles agree on, and it is kept
    for the rest of the process (for these names, architecture, sources and options)."""
    from fastff.kernels.cuda import compiler
    key = (tuple(names), arch, compiler.source(), compiler.compile_options())
    if key not in _CUBINS:
        seen = []
        for _ in range(COMPILE_TRIES):
            got = _compile_once(names, arch)
            if got in seen:
                _CUBINS[key] = got
                break
            seen.append(got)
        else:
            raise RuntimeError(f"{COMPILE_TRIES} compiles of {', '.join(names)} for {arch} gave "
                               f"{COMPILE_TRIES} different cubins: no schedule to read")
    return _CUBINS[key]


def _compile_once(names, arch):
    from cupy.cuda import nvrtc
    from fastff.kernels.cuda import compiler
    prog = nvrtc.createProgram(compiler.source(), "fastff_kernels.cu", [], [])
    try:
        for n in names:
            nvrtc.addNameExpression(prog, n)
        nvrtc.compileProgram(prog, [f"--gpu-architecture={arch}", *compiler.compile_options()])
        lowered = {n: nvrtc.getLoweredName(prog, n) for n in names}
        return _whole_elf(nvrtc.getCUBIN(prog)), lowered
    finally:
        nvrtc.destroyProgram(prog)


def disassemble(cubin, tool=None):
    """``cuobjdump -sass`` of a cubin: {lowered function name: [(address, opcode, operands)]}."""
    tool = tool or find_cuobjdump()
    if tool is None:
        raise FileNotFoundError("no cuobjdump with nvdisasm: pip install nvidia-cuda-cuobjdump "
                                "nvidia-cuda-nvdisasm")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        # cuobjdump runs nvdisasm: found on PATH or through NVDISASM_PATH
        env = dict(os.environ, NVDISASM_PATH=str(Path(find_tool("nvdisasm") or "").parent))
        run = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True, env=env)
        if run.returncode:
            raise RuntimeError(f"cuobjdump failed: {run.stderr.strip()[-500:]}")
        text = run.stdout
    functions, current = {}, None
    for line in text.splitlines():
        m = FUNCTION.search(line)
        if m:
            current = functions.setdefault(m.group(1), [])
            continue
        m = LINE.search(line)
        if m and current is not None:
            current.append((int(m.group(1), 16), m.group(3), m.group(4).strip()))
    return functions


def kind(opcode):
    return KINDS.get(opcode.split(".")[0], "other")


REGISTER = re.compile(r"\bR(\d+)\b")


def _written(opcode, operands):
    """The registers a load writes: its first operand, 1, 2 or 4 of them by its width."""
    first = REGISTER.match(operands.split(",")[0].strip())
    if not first:
        return set()
    width = 4 if ".128" in opcode else 2 if ".64" in opcode else 1
    return {int(first.group(1)) + i for i in range(width)}


def round_trips(body):
    """How many times an iteration of a loop waits for its own loads: a scoreboard over the
    body (twice, so that loads issued at the end of one iteration and used in the next count):
    an instruction that reads a register a load in flight will write waits for every load in
    flight (they were issued together and come back together, near enough)."""
    pending, stalls = set(), 0
    for rep in range(2):
        for opcode, operands in body:
            regs = [m for m in REGISTER.findall(operands)]
            is_load = kind(opcode) == "load"
            reads = regs[1:] if (is_load or kind(opcode) in ("fp32", "fp64", "other")) else regs
            if pending & {int(r) for r in reads}:
                stalls += rep  # counted on the second pass
                pending.clear()
            if is_load:
                pending |= _written(opcode, operands)
    return max(stalls, 1)


def chain_cycles(body, latency, shared_latency=30, sync=0):
    """Cycles an iteration of a loop takes on its own in steady state (the second of two
    passes over ``body``, so that loads issued in one iteration for the next count): one
    instruction a cycle; an instruction that reads a register a load writes waits for the
    value, ``latency`` cycles after a global load issued and ``shared_latency`` after a shared
    one; each ``__syncthreads`` (BAR) adds ``sync``. A load issued well before its use (a chunk
    ahead) costs only what the instructions in between do not cover."""
    ready, t, start = {}, 0, 0
    for rep in range(2):
        start = t
        for opcode, operands in body:
            k = kind(opcode)
            regs = [int(r) for r in REGISTER.findall(operands)]
            first = REGISTER.match(operands.split(",")[0].strip())
            writes = first is not None and k not in ("store", "shared store", "branch")
            reads = regs[1:] if writes else regs
            t = max([t] + [ready.get(r, 0) for r in reads]) + 1
            if k == "barrier":
                t += sync
            if k in ("load", "shared load"):
                arrives = t + (latency if k == "load" else shared_latency)
                for r in _written(opcode, operands):
                    ready[r] = arrives
            elif writes:
                ready[int(first.group(1))] = 0
    return t - start


def loops(instructions, innermost=True):
    """The loops of one function (the innermost only, by default): for each, its address
    range and the counts of its own instructions by kind (``total``, ``load``, ``fp32``, ...;
    a loop's own: not those of the loops inside it), in address order."""
    spans = set()
    for address, opcode, operands in instructions:
        if opcode == "BRA":
            m = re.search(r"0x([0-9a-f]+)", operands)
            if m and int(m.group(1), 16) <= address:
                spans.add((int(m.group(1), 16), address))

    def inside(s):
        return [o for o in spans if o != s and s[0] <= o[0] and o[1] <= s[1]]
    out = []
    for start, end in sorted(spans):
        nested = inside((start, end))
        if innermost and nested:
            continue
        own = [(op, operands) for a, op, operands in instructions if start <= a <= end
               and not any(n[0] <= a <= n[1] for n in nested)]
        body = [op for op, _ in own]
        counts = Counter(kind(op) for op in body)
        wide = sum(1 for op in body if kind(op) == "load" and ".128" in op)
        if wide:
            counts["16-byte loads"] = wide
        counts["total"] = len(body)
        counts["round trips"] = round_trips(own)
        # an iteration with each loop inside it run once (the GEMMs' staging loops of a tile)
        whole = [(op, operands) for a, op, operands in instructions if start <= a <= end]
        out.append(dict(start=start, end=end, counts=dict(counts), innermost=not nested,
                        with_nested=len(whole), body=whole))
    return out


def gemm_loop(kernel="dense_forward_fused<float, 2>", arch="sm_90", tensor=False, latency=None,
              sync=0):
    """The main loop of a layer-by-layer product: its counts per iteration (one tile depth of
    the product). On CUDA cores (``tensor`` False) the loop whose own instructions hold the
    most FP32 arithmetic; on tensor cores the plain TF32 loop (``tensor`` True or "tf32") or
    the split-precision one ("3xtf32"), which forms every product three times: of the loops
    with tensor-core products, the one with the fewest or the most. With ``latency``, its
    ``chain cycles`` too (:func:`chain_cycles`: the next slice's loads, issued before this
    slice's products, wait only for what those do not cover)."""
    cubin, lowered = compile_cubin([kernel], arch)
    found = loops(disassemble(cubin)[lowered[kernel]], innermost=False)
    if not tensor:
        best = max(found, key=lambda l: l["counts"].get("fp32", 0))
    else:
        mma = [l for l in found if l["counts"].get("tensor", 0)]
        pick = max if tensor == "3xtf32" else min
        best = pick(mma, key=lambda l: l["counts"]["tensor"])
    counts = dict(best["counts"])
    if latency is not None:
        counts["chain cycles"] = chain_cycles(best["body"], latency, sync=sync)
    return dict(kernel=kernel, arch=arch, counts=counts, with_nested=best["with_nested"])


def step_loops(activation="tanh", dtype="float", arch="sm_90", latency=None, sync=0, batch=None):
    """The persistent step's two hot loops, from train_steps' SASS: the chunk loops of
    ``forward`` (a strip of F_l: per iteration, KC steps of the reduction for every lane: its
    weights, the staging of the chunk's inputs in shared memory, FMAs from shared memory) and
    ``backward`` (a strip of B_l, JC columns of delta a chunk; it also stores the updated
    weights). Each is the loop of its kind with the most 16-byte loads, then the most
    arithmetic (the strips are compiled twice, with 16-byte loads of W and without). Its
    counts are per iteration with the staging loop inside it once (``total``, and ``round
    trips``: its own and the staging loop's; with ``latency``, ``chain cycles``: its
    :func:`chain_cycles` at that global load latency and ``sync`` cycles a __syncthreads).
    ``batch``: the instance a step at that batch launches (its rows, compiler.step_rows;
    default the most rows)."""
    from fastff import config
    from fastff.kernels.cuda.compiler import step_name
    name = step_name(dtype, activation, config.CUDA_STEP_MAX_BATCH if batch is None else batch)
    cubin, lowered = compile_cubin([name], arch)
    found = loops(disassemble(cubin)[lowered[name]], innermost=False)
    fp = "fp32" if dtype == "float" else "fp64"

    def chunk(loop):
        nested = [o for o in found if o is not loop and loop["start"] <= o["start"]
                  and o["end"] <= loop["end"]]
        counts = dict(loop["counts"], total=loop["with_nested"])
        for key in ("load", "shared store"):
            counts[key] = counts.get(key, 0) + sum(o["counts"].get(key, 0) for o in nested)
        counts["round trips"] = loop["counts"]["round trips"] + sum(
            o["counts"]["round trips"] for o in nested)
        if latency is not None:
            counts["chain cycles"] = chain_cycles(loop["body"], latency, sync=sync)
        return counts
    chunks = [l for l in found if l["counts"].get("barrier", 0) == 2 and l["counts"].get(fp, 0) >= 8]
    forward = [l for l in chunks if not l["counts"].get("store")]
    backward = [l for l in chunks if l["counts"].get("store")]
    # a training step's loops: 16-byte loads of W, then the most arithmetic, then (for float)
    # the backward without the dC/dW sums' double arithmetic (a step keeps them only on demand)
    other = "fp64" if fp == "fp32" else "fp32"
    pick = lambda ls: max(ls, key=lambda l: (l["counts"].get("16-byte loads", 0),  # noqa: E731
                                             l["counts"].get(fp, 0),
                                             -l["counts"].get(other, 0)))
    return dict(kernel=name, arch=arch, forward=chunk(pick(forward)),
                backward=chunk(pick(backward)), loops=len(found))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="sm_90")
    p.add_argument("--kernel", default=None, help="one template instance; default: the "
                   "persistent step's two hot loops")
    a = p.parse_args(argv)
    if a.kernel is None:
        found = step_loops(arch=a.arch)
        for name in ("forward", "backward"):
            print(f"{found['kernel']} {a.arch}, {name} strip loop, one iteration: "
                  + ", ".join(f"{v} {k}" for k, v in sorted(found[name].items())))
        return
    cubin, lowered = compile_cubin([a.kernel], a.arch)
    for l in loops(disassemble(cubin)[lowered[a.kernel]], innermost=False):
        print(f"{l['start']:#06x}-{l['end']:#06x}{'' if l['innermost'] else ' (outer)'}: "
              + ", ".join(f"{v} {k}" for k, v in sorted(l["counts"].items())))


if __name__ == "__main__":
    main()
