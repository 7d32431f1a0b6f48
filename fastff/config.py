"""Every tunable number of fastff in one place: thresholds, histogram bins, block sizes.

Tests patch these module attributes (for example a smaller column chunk so that tiny inputs span
many blocks). Kernels read them at call time, never at import time; the one exception is
CPU_VECTOR_BYTES (below), and a kernel finding it changed since import says so.
"""
import math
import os

# -- Saturation rules (the paper sets no numeric threshold; its Figs. 2-4 and 10 show them) ----
# A unit output h counts as saturated-low when h <= low and saturated-high when h >= high.
# tanh/softsign: |h| >= 0.99 is the common tutorial convention; sigmoid uses 0.01 / 0.99;
# relu: h == 0 counts on the low side ("dead" for that example), there is no high side;
# linear (the softmax layer's affine part) never saturates.
SATURATION = {
    "sigmoid": (0.01, 0.99),
    "tanh": (-0.99, 0.99),
    "softsign": (-0.99, 0.99),
    "relu": (0.0, math.inf),
    "linear": (-math.inf, math.inf),
}

# -- Histograms of activation values: fixed bins over each activation's range ------------------
HIST_BINS = 50
HIST_RANGE = {
    "sigmoid": (0.0, 1.0),
    "tanh": (-1.0, 1.0),
    "softsign": (-1.0, 1.0),
    "relu": (0.0, 4.0),  # values above 4 land in the last bin
    "linear": (-4.0, 4.0),
}

# -- CPU kernel blocking (measured on a 2-core AVX-512 machine, see benchmarks/NOTES.md) -------
# Batches up to this size use fastff's own register-blocked loops (weight-streaming, memory
# and load-port bound); larger batches use BLAS for the matrix products and fuse the rest.
CPU_SMALL_BATCH_MAX = 16
# A run chooses, while it trains, between these passes on every core and their serial twins
# (the same numbers), whichever is faster now: on a busy machine the threads wait for each other
# (fastff/training/threads.py). Every PROBE_EVERY_S seconds of training (the first time after
# FIRST_PROBE_S) it times PROBE_STEPS steps of each; 0 turns the probes off.
CPU_THREADS_PROBE_EVERY_S = 30.0
CPU_THREADS_FIRST_PROBE_S = 5.0
CPU_THREADS_PROBE_STEPS = 25
# Output columns per task of the element-wise passes when threads share them (one thread,
# after BLAS, takes the whole width: benchmarks/NOTES.md); a multiple of 16 keeps row
# segments cache-line aligned.
CPU_COL_CHUNK = 128
# Rows of W per task, in the forward (small batch) and backward passes alike: the two passes
# must split W the same way so that each row stays with one core (benchmarks/NOTES.md).
CPU_ROW_BLOCK = 128
# Register use of the small-batch loops (fastff/kernels/cpu/tiles.py): the forward panel,
# rows of W by vectors of columns, added into every row of the batch's partial product (one
# broadcast of x serves a row's vectors; W_ROWS x W_VECS + W_VECS + 1 must fit the vector
# registers: benchmarks/NOTES.md, "Forward panels two vectors wide"); rows of W per backward
# tile, each by the whole batch (two rows stay faster on AVX2 too, although their sums spill:
# NOTES.md, "AVX2").
CPU_FORWARD_W_ROWS = 6
CPU_FORWARD_W_VECS = 2
CPU_BACKWARD_W_ROWS = 2
# The BLAS library of the large-batch products: "auto" takes Intel oneMKL on an Intel processor
# where the `mkl` package is installed (`pip install 'fastff[mkl]'`), SciPy's OpenBLAS
# otherwise; "openblas" or "mkl" forces one (so does the environment variable FASTFF_CPU_BLAS).
# The products' sums differ between the two in their last bits (benchmarks/NOTES.md, "oneMKL on
# an Intel Xeon").
CPU_BLAS = os.environ.get("FASTFF_CPU_BLAS", "auto")
# Software prefetch distances, in rows of W, of the small-batch loops; 0 turns prefetching
# off. The forward reads W in row order, which the hardware prefetchers follow, but not far
# enough ahead to keep the panels fed (benchmarks/NOTES.md, "Forward prefetch").
CPU_FWD_PREFETCH_ROWS = 12
CPU_BWD_PREFETCH_ROWS = 4
# An MLP prefetches only when its weights exceed this many bytes: smaller ones stay in the
# cores' own caches between steps, where the prefetch instructions only cost issue slots. The
# shared last-level cache is not counted on: other programs and tenants evict from it. Measured,
# median step at batch 10 (benchmarks/NOTES.md, "Software prefetch"): the paper's net (20 MB)
# on a Zen 5, 1.28 ms without and 1.34 ms with; on a Zen 3 (32 MB L3), 9.2-10.5 ms without and
# 6.4-7.6 ms with; 20 x 1000 units (80 MB) on the Zen 5, 9.4 ms without, 7.0 ms with.
CPU_PREFETCH_MIN_BYTES = 2 * 2**20
# The arrays fastff keeps for the CPU (weights, workspaces, rates) and its kernels' outputs start
# on a multiple of this many bytes, a cache line: NumPy's own large arrays start 16 bytes past
# one, so every other vector straddles two lines (benchmarks/NOTES.md, "Arrays on cache
# lines"). A power of two.
CPU_ARRAY_ALIGN = 64
# Width of the SIMD vectors in fastff.kernels.cpu.simd: None picks the host's widest (64 bytes with
# AVX-512, else 32); the environment variable FASTFF_CPU_VECTOR_BYTES overrides it. Read once,
# at import of fastff.kernels: the register tile types are built from it.
CPU_VECTOR_BYTES = int(os.environ.get("FASTFF_CPU_VECTOR_BYTES", "0")) or None

# -- Training defaults ------------------------------------------------------------------------
MONITOR_EXAMPLES = 300  # the paper's fixed monitor set (§2.3)
# Histograms of gradients (dC/ds, dC/dW) have no natural range: each monitor snapshot uses
# +- GRAD_HIST_SIGMAS times the largest per-layer std of that snapshot, shared by all layers so
# that their histograms overlay as in the paper's Figs. 7 and 8. An odd bin count centres a bin
# on zero.
GRAD_HIST_BINS = 101
GRAD_HIST_SIGMAS = 4.0
# Examples of the monitor set whose layer Jacobians are decomposed (Eq. 17: the paper
# does not say how many). One eigen-decomposition of a 1000x1000 Gram matrix costs about
# 34 ms on a 2-core CPU, the largest cost of a snapshot. Measured at initialization on
# Shapeset (5x1000 tanh), the per-example value varies with a std of up to 0.06 in layer 1
# (normalized init) and 0.02 (standard), so 3 examples give about +-0.035, well inside the gap
# between the paper's 0.5 and 0.8.
JACOBIAN_EXAMPLES = 3

# -- Per-parameter learning rates (fastff.kernels.rates; the paper's §5) -----------------------
# The running averages of the curvature / gradient-variance estimates keep about 1 / (1 - decay)
# steps. The damping is the scale of the estimate (diag_hessian) or of its square root
# (grad_variance) above which a parameter's rate lr / (1 + estimate / damping) shrinks; the
# values were chosen on Shapeset (benchmarks/NOTES.md, "Second-order rates").
SECOND_ORDER_DECAY = 0.99
SECOND_ORDER_DAMPING = {"diag_hessian": 1e-6, "grad_variance": 1e-3}

# -- CUDA launch shapes (fastff/kernels/cuda/; compiled in as -D defines) -----------------------
# GEMM tiles (rows, columns, depth) of the split-K products: (TN / 4) x (TM / 4) threads per
# block, 4 x 4 outputs per thread. Powers of two, rows and columns >= 4; the host emulation
# tests patch small ones.
CUDA_GEMM_TILE = (64, 64, 16)
# Entries of W per side of a weight-update block: (UT / 4)^2 threads, 4 x 4 entries each.
CUDA_UPDATE_TILE = 64
# True: float32 products of the layer-by-layer path (batches past the persistent step's) on
# tensor cores in split-precision TF32 ("3xTF32": float32's accuracy, three tensor-core products
# for one) on GPUs with TF32 and tiles that allow it: the forward, dC/dx and the update of plain
# SGD. Off until a GPU shows it faster: its main loop is forecast only 6-9% faster than the
# CUDA cores' (benchmarks/NOTES.md, "3xTF32"). tf32=True asks for plain TF32 in forward, dC/dx.
CUDA_SPLIT_TF32 = False
# Threads per block of the one-thread-per-column kernels (delta, softmax, second-order columns).
CUDA_THREADS = 256
# Rows per block of the delta kernel: a batch of 1024 is 32 row blocks, not one block a column.
CUDA_DELTA_ROWS = 32
# Blocks per SM the launch bounds of the one-thread-per-column kernels and of the layer products
# leave room for.
CUDA_BLOCKS_PER_SM = 2
# Split-K gives a product at most this many blocks, so that a batch-10 layer fills a GPU in
# one wave (2 x 132 SMs of an H100 or H200). A fixed number, not read from the GPU, so that
# every GPU adds the same splits in the same order and gives the same bits.
CUDA_SPLIT_BLOCKS = 264
# Outputs of a thread whose split-K partial products the layer products' epilogue loads
# together (fastff::add_splits), in float32 (float64 takes one: its sums leave no registers
# for more): more loads in flight, the same sums.
CUDA_EPILOGUE_ROWS = 4
# Largest activation histogram the CUDA epilogue counts in shared memory.
CUDA_MAX_BINS = 1024
# A model's layer-by-layer step runs the cost (and the output layer's bias step) in the output
# layer's forward launch (float32), forms each hidden layer's delta (and steps its bias, with its
# statistics) in the epilogue of the dC/dx launch of the layer above, each layer's update in the
# dC/dx launch of the layer below it (float32, square tiles) and the last two updates in one
# launch: 2 L launches a step with the forward's, not 4 L, and no dC/dx array written and
# read back (benchmarks/NOTES.md, "The backward pass fused across layers", "Updates beside
# dC/dx", "The cost in the output layer's launch"). False: the forward, the cost, then a layer
# at a time (dense_backward_sgd's three launches each).
CUDA_FUSED_BACKWARD = True

# -- The persistent training step (fastff/kernels/cuda/train_step.cu, step.py) -----------------
# Which way device="cuda" runs a training step: "auto" (the persistent step wherever it applies:
# batches of at most CUDA_STEP_MAX_BATCH rows, at most CUDA_STEP_MAX_CLASSES classes, plain SGD;
# the layer-by-layer kernels otherwise), "persistent" (an error where it does not apply) or
# "layers" (always the layer-by-layer kernels).
CUDA_STEP_PATH = "auto"
# Capture the layer-by-layer step in a CUDA graph from its second step with one model, batch
# size and statistics object (then a step is its input copies, one graph launch and a loss copy,
# not 2 L kernel launches); False launches the kernels one by one every step.
CUDA_GRAPH = True
# Units of a layer per strip (the forward's columns, the backward's rows of W) and threads
# along each; a block has STRIP x LANES threads. Powers of two.
CUDA_STEP_STRIP = 8
CUDA_STEP_LANES = 32
# The largest batch and softmax the persistent step holds in registers and shared memory.
CUDA_STEP_MAX_BATCH = 16
CUDA_STEP_MAX_CLASSES = 32
# Step losses kept on the device, in one ring a process (both CUDA paths), before the trainer
# reads them: it does at least every LOSS_READ_EVERY steps (fastff/training/trainer.py), well
# inside the ring.
CUDA_STEP_LOSS_RING = 65536
# A debugging bound on the persistent step's grid barriers: a block that has polled a barrier
# this many times (about 100 ns a poll) gives up, and the step raises a DeviceError naming the
# block, the phase and the blocks that arrived, instead of hanging. 0 (production): wait for
# ever, with nothing in the loop but the poll.
CUDA_BARRIER_POLLS = 0
# A profiling build of the persistent step: it records when each phase ends (the GPU's
# nanosecond clock, block 0, after the phase's barrier), kept in StepLaunch.phase_ns. Off in
# production (compiled out).
CUDA_PROFILE_STEP = False
LOSS_READ_EVERY = 4096  # fastff.train_many reads more often: every run's losses share the ring

# -- Sweeps on GPUs (fastff/sweeps.py) ---------------------------------------------------------
# Runs with device="cuda" that one Dask task trains together with fastff.train_many. At the
# paper's net a run holds about 100 MB on the device (20 MB of weights, its statistics and
# workspace, a staged MNIST at most 160 MB more): 16 of them fit any GPU of 8 GB or more, and
# the lockstep's modelled gain has flattened by then (benchmarks/NOTES.md). A GPU that holds
# fewer trains the rest of a pack after them (TRAIN_MANY_MEMORY_MARGIN).
SWEEP_GPU_PACK = 16
# fastff.train_many sets up runs on a GPU until the memory left would not hold this many more
# runs like the last one set up (what it took, measured); the rest train in a later wave. The
# margin covers what a run allocates after its set-up (evaluation batches, checkpoints' copies).
TRAIN_MANY_MEMORY_MARGIN = 2.0
