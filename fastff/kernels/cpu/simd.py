"""Register tiles for Numba: explicit SIMD for the small-batch matrix loops.

At the paper's batch of 10 a layer is a tall, thin product (10 x 1000 times 1000 x 1000). A good
kernel keeps a tile of partial sums in vector registers for the whole reduction and streams the
weights past it once. Numba's auto-vectorizer cannot do that: it vectorizes innermost loops
only, so the partial sums travel through memory on every step (measured 3x below the tile
below). This module gives compiled code a value type that LLVM keeps in registers:

``Tile(dtype, rows, vecs)``
    ``rows x vecs`` SIMD vectors of ``LANES[dtype]`` lanes each (one vector is
    :data:`VEC_BYTES` wide: a zmm register with AVX-512, a ymm register otherwise). It is an
    SSA value: assigning it to a variable in a loop costs no memory traffic.

and the operations the kernels in :mod:`fastff.kernels.cpu` are made of. ``rows`` and ``vecs``
are compile-time constants: ``tile_zeros(W, 5, 4)`` with literal numbers, chosen by an explicit
``if``/``elif`` chain where the shape depends on the data; each shape compiles its own code.
Vector accesses take a count ``n`` of valid columns and are masked: lanes at ``j + k`` with
``k >= n`` are neither read (they read as 0) nor written, so partial vectors never touch memory
outside an array. Where ``n`` may be None the access is a plain full-width load or store.

The sums run in a fixed order (no reassociation across calls), so results are deterministic.
"""
import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from ... import config


def _vector_bytes():
    """64 (AVX-512) or 32 bytes: the widest vector registers the host CPU has."""
    if config.CPU_VECTOR_BYTES:
        if config.CPU_VECTOR_BYTES not in (16, 32, 64):
            raise ValueError(f"CPU_VECTOR_BYTES must be 16, 32 or 64, got {config.CPU_VECTOR_BYTES}")
        return int(config.CPU_VECTOR_BYTES)
    llvm.initialize_native_target()
    return 64 if "+avx512f" in llvm.get_host_cpu_features().flatten().split(",") else 32


VEC_BYTES = _vector_bytes()
LANES = {"float32": VEC_BYTES // 4, "float64": VEC_BYTES // 8}
# Vector registers of the ISA that VEC_BYTES selects: 32 with AVX-512 (zmm0-31), 16 with AVX2
# (ymm0-15); the kernels size their tiles to them (fastff.kernels.cpu).
VEC_REGISTERS = 32 if VEC_BYTES == 64 else 16
# Bytes of a cache line (x86-64): what one software prefetch brings in.
LINE_BYTES = 64


class Tile(types.Type):
    """``rows x vecs`` SIMD vectors of one float dtype, held in registers."""

    def __init__(self, dtype, rows, vecs):
        self.dtype, self.rows, self.vecs = dtype, rows, vecs
        self.lanes = LANES[str(dtype)]
        super().__init__(name=f"Tile({dtype}, {rows}x{vecs}x{self.lanes})")


@register_model(Tile)
class _TileModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        vec = ir.VectorType(_elt(fe_type.dtype), fe_type.lanes)
        super().__init__(dmm, fe_type, ir.ArrayType(vec, fe_type.rows * fe_type.vecs))


def _elt(dtype):
    return ir.FloatType() if dtype.bitwidth == 32 else ir.DoubleType()


def _literal(value):
    """The value of a positive integer literal type, else None (typing then tries literals).

    A tuple of n items also stands for n: a height carried in an argument's type, so that a
    kernel called from Python with ``(0,) * rows`` compiles one specialization per height
    through the ordinary dispatch (``numba.literally`` re-types on every call from Python,
    which cost 25 ms a call)."""
    if isinstance(value, types.IntegerLiteral) and value.literal_value >= 1:
        return value.literal_value
    if isinstance(value, types.UniTuple) and value.count >= 1:
        return value.count
    return None


def _float_array(ary, ndim, what):
    if not isinstance(ary, types.Array) or ary.ndim != ndim or ary.dtype not in (types.float32,
                                                                                   types.float64):
        raise TypeError(f"{what} must be a {ndim}-d float32 or float64 array")


# -- code generation helpers (run while Numba lowers a call) ----------------------------------
class _Gen:
    """Vector instructions for one dtype, emitted with ``builder``."""

    def __init__(self, context, builder, dtype, lanes):
        self.c, self.b, self.dtype, self.lanes = context, builder, dtype, lanes
        self.elt = _elt(dtype)
        self.vec = ir.VectorType(self.elt, lanes)
        self.align = dtype.bitwidth // 8
        sfx = f"v{lanes}f{dtype.bitwidth}"
        mod = builder.module
        mask_ty = ir.VectorType(ir.IntType(1), lanes)
        ptr = self.vec.as_pointer()
        self._fma = cgutils.get_or_insert_function(
            mod, ir.FunctionType(self.vec, [self.vec] * 3), f"llvm.fma.{sfx}")
        self._load = cgutils.get_or_insert_function(
            mod, ir.FunctionType(self.vec, [ptr, ir.IntType(32), mask_ty, self.vec]),
            f"llvm.masked.load.{sfx}.p0")
        self._store = cgutils.get_or_insert_function(
            mod, ir.FunctionType(ir.VoidType(), [self.vec, ptr, ir.IntType(32), mask_ty]),
            f"llvm.masked.store.{sfx}.p0")

    def zeros(self):
        return ir.Constant(self.vec, None)

    def splat(self, scalar):
        """``scalar`` (a float, or an i1 for a lane mask) in every lane of a vector."""
        ty = ir.VectorType(scalar.type, self.lanes)
        v = self.b.insert_element(ir.Constant(ty, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0))
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), self.lanes), [0] * self.lanes)
        return self.b.shuffle_vector(v, ir.Constant(ty, ir.Undefined), zeros)

    def mask(self, n, k):
        """The lanes of vector k (elements k*lanes + lane) that are below n."""
        i64 = ir.IntType(64)
        lanes = ir.Constant(ir.VectorType(i64, self.lanes), list(range(self.lanes)))
        return self.b.icmp_signed("<", lanes, self.splat(self.b.sub(n, ir.Constant(i64, k * self.lanes))))

    def _vptr(self, elem_ptr, k):
        p = self.b.gep(elem_ptr, [ir.Constant(ir.IntType(64), k * self.lanes)])
        return self.b.bitcast(p, self.vec.as_pointer())

    def load(self, elem_ptr, k, mask):
        """Vector k from elem_ptr; masked-off lanes read as 0 (mask None: a plain load)."""
        if mask is None:
            return self.b.load(self._vptr(elem_ptr, k), align=self.align)
        return self.b.call(self._load, [self._vptr(elem_ptr, k), ir.Constant(ir.IntType(32), self.align),
                                        mask, self.zeros()])

    def store(self, value, elem_ptr, k, mask):
        """Vector k to elem_ptr; masked-off lanes are left alone (mask None: a plain store)."""
        if mask is None:
            self.b.store(value, self._vptr(elem_ptr, k), align=self.align)
            return
        self.b.call(self._store, [value, self._vptr(elem_ptr, k),
                                  ir.Constant(ir.IntType(32), self.align), mask])

    def fma(self, a, x, y):
        return self.b.call(self._fma, [a, x, y])

    def hsum(self, v):
        """Sum of the lanes by halving (a fixed order)."""
        n = self.lanes
        while n > 1:
            n //= 2
            lo = self.b.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), n), list(range(n))))
            hi = self.b.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), n),
                                                         list(range(n, 2 * n))))
            v = self.b.fadd(lo, hi)
        return self.b.extract_element(v, ir.Constant(ir.IntType(32), 0))

    def ptr2(self, aryty, ary, i, j):
        """Pointer to element [i, j] of a 2-d array."""
        return cgutils.get_item_pointer(self.c, self.b, aryty, self.c.make_array(aryty)(self.c, self.b, ary),
                                        [i, j], wraparound=False)


def _parts(builder, tile, tty):
    return [[builder.extract_value(tile, r * tty.vecs + v) for v in range(tty.vecs)]
            for r in range(tty.rows)]


def _pack(builder, tty, parts):
    out = ir.Constant(ir.ArrayType(ir.VectorType(_elt(tty.dtype), tty.lanes), tty.rows * tty.vecs),
                      ir.Undefined)
    for r in range(tty.rows):
        for v in range(tty.vecs):
            out = builder.insert_value(out, parts[r][v], r * tty.vecs + v)
    return out


def _i64(context, builder, value, ty):
    return context.cast(builder, value, ty, types.int64)


def _const(k):
    return ir.Constant(ir.IntType(64), k)


# -- the operations ---------------------------------------------------------------------------
@intrinsic
def tile_zeros(typingctx, like, rows, vecs):
    """A Tile of zeros with the dtype of the array ``like``."""
    if not isinstance(like, types.Array) or like.dtype not in (types.float32, types.float64):
        raise TypeError("like must be a float32 or float64 array")
    n_rows, n_vecs = _literal(rows), _literal(vecs)
    if n_rows is None or n_vecs is None:
        return None
    tty = Tile(like.dtype, n_rows, n_vecs)

    def codegen(context, builder, sig, args):
        return ir.Constant(context.get_value_type(tty), None)
    return tty(like, rows, vecs), codegen


@intrinsic
def tile_lanes(typingctx, tile):
    """Lanes per vector of ``tile`` (a compile-time constant)."""
    if not isinstance(tile, Tile):
        return None

    def codegen(context, builder, sig, args):
        return ir.Constant(ir.IntType(64), tile.lanes)
    return types.int64(tile), codegen


@intrinsic
def rows_rank_k(typingctx, s, x, W, i, j, n, rows, k, vecs):
    """s[r, j : j+vecs*lanes] += x[r, i + v] * W[i + v, j : j+vecs*lanes] for v = 0 .. k-1 in
    order, for every row r < ``rows`` of s and x; ``rows``, ``k`` and ``vecs`` are heights.

    ``vecs`` vectors of columns of ``s += x[:, i:i+k] @ W[i:i+k]``, a panel of k rows of W at a
    time, so that W is read in the order it lies in memory: the panel's k x vecs vectors are
    loaded once, then each row of s is loaded, takes its fused multiply-adds in the order of i
    (one broadcast of x[r, i + v] serves the vecs vectors of row v) and is stored. ``n``: the
    valid columns from j (masked; vectors past them touch no memory), None for all of them.
    """
    _float_array(s, 2, "s")
    _float_array(x, 2, "x")
    _float_array(W, 2, "W")
    n_rows, n_k, n_vecs = _literal(rows), _literal(k), _literal(vecs)
    if n_rows is None or n_k is None or n_vecs is None:
        return None

    def codegen(context, builder, sig, args):
        dtype = sig.args[2].dtype
        g = _Gen(context, builder, dtype, LANES[str(dtype)])
        i_v, j_v = [_i64(context, builder, args[a], sig.args[a]) for a in (3, 4)]
        if isinstance(sig.args[5], types.NoneType):
            masks = [None] * n_vecs
        else:
            n_v = _i64(context, builder, args[5], sig.args[5])
            masks = [g.mask(n_v, c) for c in range(n_vecs)]
        w = [[g.load(g.ptr2(sig.args[2], args[2], builder.add(i_v, _const(v)), j_v), c, masks[c])
              for c in range(n_vecs)] for v in range(n_k)]
        for r in range(n_rows):
            sp = g.ptr2(sig.args[0], args[0], _const(r), j_v)
            acc = [g.load(sp, c, masks[c]) for c in range(n_vecs)]
            for v in range(n_k):
                xs = g.splat(builder.load(g.ptr2(sig.args[1], args[1], _const(r),
                                                 builder.add(i_v, _const(v)))))
                acc = [g.fma(xs, w[v][c], acc[c]) for c in range(n_vecs)]
            for c in range(n_vecs):
                g.store(acc[c], sp, c, masks[c])
        return context.get_dummy_value()
    return types.none(s, x, W, i, j, n, rows, k, vecs), codegen


@intrinsic
def prefetch(typingctx, ary, i, j):
    """Ask the cache for the line holding ary[i, j] (a hint: never faults, even out of range)."""
    _float_array(ary, 2, "ary")

    def codegen(context, builder, sig, args):
        i_v, j_v = [_i64(context, builder, args[a], sig.args[a]) for a in (1, 2)]
        a = context.make_array(sig.args[0])(context, builder, args[0])
        strides = cgutils.unpack_tuple(builder, a.strides)
        offset = builder.add(builder.mul(i_v, strides[0]), builder.mul(j_v, strides[1]))
        ptr = builder.gep(builder.bitcast(a.data, ir.IntType(8).as_pointer()), [offset])
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()] + [ir.IntType(32)] * 3),
            "llvm.prefetch.p0")
        i32 = ir.IntType(32)
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.none(ary, i, j), codegen


@intrinsic
def tile_coefs(typingctx, shape, x, i, nv, lr):
    """A tile like ``shape`` with lr * x[r, i + v] in every lane of vector [r, v] (0 for v >= nv).

    The SGD coefficients of rows i .. i+nv-1 of W, built once per row and kept in registers
    across the row's columns (loaded inside the column loop they would be loaded again every
    time: the compiler cannot tell that the stores to W leave x alone)."""
    _float_array(x, 2, "x")

    def codegen(context, builder, sig, args):
        tty = sig.args[0]
        g = _Gen(context, builder, tty.dtype, tty.lanes)
        i_v, nv_v = [_i64(context, builder, args[a], sig.args[a]) for a in (2, 3)]
        lr_v = context.cast(builder, args[4], sig.args[4], tty.dtype)
        parts = [[None] * tty.vecs for _ in range(tty.rows)]
        for v in range(tty.vecs):
            valid = builder.icmp_signed("<", _const(v), nv_v)
            col = builder.select(valid, builder.add(i_v, _const(v)), i_v)
            for r in range(tty.rows):
                c = builder.fmul(lr_v, builder.load(g.ptr2(sig.args[1], args[1], _const(r), col)))
                parts[r][v] = g.splat(builder.select(valid, c, ir.Constant(g.elt, 0.0)))
        return _pack(builder, tty, parts)
    return shape(shape, x, i, nv, lr), codegen


def _grad_update_codegen(want_dot):
    """Codegen of one column vector of the fused backward pass (see tile_grad_update)."""
    def codegen(context, builder, sig, args):
        if want_dot:
            acc_t, acc = sig.args[0], args[0]
        coef_t, coef = sig.args[-1], args[-1]
        g = _Gen(context, builder, coef_t.dtype, coef_t.lanes)
        off = 1 if want_dot else 0  # (acc,) delta, W, i, nv, j, n, coefs
        d_t, d_v, W_t, W_v = sig.args[off], args[off], sig.args[off + 1], args[off + 1]
        full = isinstance(sig.args[off + 5], types.NoneType)  # n is None: all lanes, all rows
        i_v, j_v = [_i64(context, builder, args[off + a], sig.args[off + a]) for a in (2, 4)]
        if not full:
            nv_v, n_v = [_i64(context, builder, args[off + a], sig.args[off + a]) for a in (3, 5)]
            m = g.mask(n_v, 0)
        parts = _parts(builder, acc, acc_t) if want_dot else None
        coefs = _parts(builder, coef, coef_t)
        w_ptrs, w, masks, upd = [], [], [], []
        for v in range(coef_t.vecs):
            row = builder.add(i_v, _const(v))
            if full:
                masks.append(None)
            else:  # rows of W past nv: no memory access at all
                valid = builder.icmp_signed("<", _const(v), nv_v)
                row = builder.select(valid, row, i_v)
                masks.append(builder.and_(m, g.splat(valid)))
            w_ptrs.append(g.ptr2(W_t, W_v, row, j_v))
            w.append(g.load(w_ptrs[v], 0, masks[v]))
            upd.append(g.zeros())
        for r in range(coef_t.rows):
            d = g.load(g.ptr2(d_t, d_v, _const(r), j_v), 0, None if full else m)
            for v in range(coef_t.vecs):
                if want_dot:
                    parts[r][v] = g.fma(d, w[v], parts[r][v])
                upd[v] = g.fma(coefs[r][v], d, upd[v])
        for v in range(coef_t.vecs):
            g.store(builder.fsub(w[v], upd[v]), w_ptrs[v], 0, masks[v])
        return _pack(builder, acc_t, parts) if want_dot else context.get_dummy_value()
    return codegen


def _check_backward(delta, W, coefs):
    _float_array(delta, 2, "delta")
    _float_array(W, 2, "W")
    if not isinstance(coefs, Tile):
        raise TypeError("coefs must be a Tile (tile_coefs)")


@intrinsic
def tile_grad_update(typingctx, acc, delta, W, i, nv, j, n, coefs):
    """One column vector of the fused backward pass over rows i .. i+nv-1 of W (nv <= vecs).

    With d_r = delta[r, j : j+lanes] for the tile's rows r (each loaded once) and
    w_v = W[i + v, j : j+lanes]:

    * acc[r, v] += d_r * w_v: partial sums of dC/dx[r, i + v], with the *old* W, then
    * W[i + v, j : j+lanes] = w_v - sum_r coefs[r, v] * d_r: the SGD update, with coefs from
      tile_coefs (lr * x[r, i + v]).

    ``n`` (valid columns from j) and ``nv`` may be None: all lanes and all ``vecs`` rows, with
    plain loads and stores. The sums run in a fixed order, so results are deterministic.
    """
    _check_backward(delta, W, coefs)
    return acc(acc, delta, W, i, nv, j, n, coefs), _grad_update_codegen(want_dot=True)


@intrinsic
def tile_update(typingctx, delta, W, i, nv, j, n, coefs):
    """The SGD update of tile_grad_update alone, no dC/dx (over coefs' rows of W)."""
    _check_backward(delta, W, coefs)
    return types.none(delta, W, i, nv, j, n, coefs), _grad_update_codegen(want_dot=False)


@intrinsic
def tile_hsum_store(typingctx, acc, out, i, nv):
    """out[r, i + v] = the sum of the lanes of acc[r, v], for v < nv."""
    _float_array(out, 2, "out")

    def codegen(context, builder, sig, args):
        tty = sig.args[0]
        g = _Gen(context, builder, tty.dtype, tty.lanes)
        i_v, nv_v = [_i64(context, builder, args[a], sig.args[a]) for a in (2, 3)]
        parts = _parts(builder, args[0], tty)
        for v in range(tty.vecs):
            with builder.if_then(builder.icmp_signed("<", _const(v), nv_v)):
                col = builder.add(i_v, _const(v))
                for r in range(tty.rows):
                    builder.store(g.hsum(parts[r][v]), g.ptr2(sig.args[1], args[1], _const(r), col))
        return context.get_dummy_value()
    return types.none(acc, out, i, nv), codegen
