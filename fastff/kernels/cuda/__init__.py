"""CUDA kernels through CuPy, with the contracts of :mod:`fastff.kernels.reference`.

The CUDA C++ sources are in ``fastff/kernels/cuda/`` (``common.cuh``, then one file per op);
they are compiled once by NVRTC through a CuPy ``RawModule`` (cached on disk by CuPy), every
template instance named in :func:`name_expressions`. The call tree::

    dense_forward       -> dense_forward_fused<T, ACT>     split-K products (all SMs busy at batch
                                                           10); the last block of a tile sums
                                                           its splits, adds b, applies f and
                                                           counts the statistics
    dense_backward_sgd  -> dense_backward_delta<T, ACT>    delta, bias update, dC/ds sums
                        -> grad_x_fused<T>                 dC/dx with the old W (split over N)
                        -> dense_backward_update<T>        W -= lr x^T delta, dC/dW sums
    dense_backward_second_order                            per-parameter rates (rates.py)
                        -> second_order_columns<T, ACT>    delta, q, the bias's rate step
                        -> grad_x_fused<T>                 dC/dx; with square_into<T>, the
                                                           curvature passed down (diag_hessian)
                        -> second_order_update<T>          W's rate step, dC/dW sums
    softmax_nll         -> softmax_nll<T>                  loss stays on the device (in a
                                                           model's step, dense_forward_and_cost
                                                           runs it in the output layer's launch)
    softmax_quadratic   -> softmax_quadratic<T>            the same, for the quadratic cost
    shapeset.render     -> shapeset_render                 Shapeset-3x2's counter stream, the
                                                           bits of fastff.data.shapeset_counter

A model's output layer, cost and plain-SGD backward pass fuse across layers
(fused_pass.output_and_backward, config.CUDA_FUSED_BACKWARD): the output layer's forward runs
the cost in its last block to finish a tile and steps the layer's bias there
(dense_forward_and_cost<float>); each layer's grad_x_fused forms the delta of the layer below
(f', its bias step, its dC/ds sums) in its epilogue, so dense_backward_delta never runs; a
layer's update runs in the dC/dx launch of the layer below it (grad_x_and_update<float>: two
jobs in one grid, which touch different layers; dC/dx takes fewer splits where that keeps the
two in one wave); and the last two updates share one (two_updates<T>). So a step is the hidden
layers' L - 1 forwards, the output layer's with the cost, the top layer's dC/dx, L - 2 launches
of both jobs and one of two updates: 2 L launches, where a layer at a time takes 4 L.

Every sum runs in a fixed order and counters use integer atomics, so a launch gives the same
bits every time. The rooms, one job each:

    compiler.py   the sources, their template instances, the compile options (made once for
                  each set of config values), the kernels' parameter lists, the compile report
    geometry.py   launch geometry, plain Python, shared with the host emulator of the tests
                  (``tests/cuda_host``, which runs these very sources and launchers on the CPU)
    runtimes.py   where kernels run: devices, streams, scratch buffers, graphs (CuPy on a GPU)
    arguments.py  a launch's arguments by name, in CUDA's form, prepared once for a launch
                  repeated every step
    launchers.py  the unchecked kernels, each launch's arguments named as in the ``.cu`` source
    fused_pass.py a model's output layer, cost and backward pass fused across layers
    step.py       the whole training step in one launch (the persistent kernel), the lockstep
                  of several nets: the backend's plan
    layer_graph.py  the layer-by-layer step captured in a CUDA graph
    barrier.py    the persistent step's grid barrier from the host: its words, its debugging
                  bound's report, the barrier alone (barrier_rounds)
    shapeset.py   Shapeset-3x2 rendered on the device

The public, checked kernels are :mod:`fastff.kernels.checked`'s, as on every backend.
``import fastff`` does not import this package, and ``import fastff.kernels.cuda`` needs no
CuPy: the runtime is created on the first kernel call, and says what is missing when it cannot
be.
"""
from ..checked import public
from .compiler import (CTYPES, STATIC_SHARED_BYTES, compile_options, compile_report, defines,
                       name_expressions, parameters, source)
from .launchers import (array_module, backward_unchecked, check_tf32, forward_unchecked,
                        second_order_unchecked, softmax_nll_unchecked,
                        softmax_quadratic_unchecked)
from .runtimes import CuPyRuntime, Graph, Runtime, require_on_device, runtime, set_runtime
from .shapeset import render_batch as render_shapeset_batch

# What these kernels can do beyond the ops (fastff.kernels.backend.Backend.can)
CAPABILITIES = frozenset({"lockstep", "device_data", "graphs", "tf32"})

__all__ = ["CTYPES", "STATIC_SHARED_BYTES", "compile_options", "compile_report", "defines",
           "name_expressions", "parameters", "source", "array_module", "backward_unchecked",
           "check_tf32", "forward_unchecked", "second_order_unchecked", "softmax_nll_unchecked",
           "softmax_quadratic_unchecked", "CuPyRuntime", "Graph", "Runtime", "require_on_device",
           "runtime", "set_runtime", "render_shapeset_batch", "CAPABILITIES", "dense_forward",
           "dense_backward_sgd", "dense_backward_second_order", "softmax_nll",
           "softmax_quadratic"]

# the public kernels, checked (fastff.kernels.checked): the same on every backend
(dense_forward, dense_backward_sgd, dense_backward_second_order, softmax_nll,
 softmax_quadratic) = public(__name__)
