"""Shapeset-3x2: the paper's online dataset, written from scratch (no pygame).

Follows the parameters of Glorot's own generator (the paper's §2.1 describes the images):

* 32x32 grey images holding 1 or 2 objects (uniform), each a triangle, parallelogram or ellipse
  (uniform), drawn as filled 3-, 4- and 20-gons;
* a regular polygon of radius 0.5 is rotated by a random angle, scaled per axis by factors in
  [0.2, 0.8] x image size (the larger factor on the horizontal axis), then rotated by one of 255
  discrete angles in [0, 2 pi), and translated uniformly so that it fits inside the image with a
  1-pixel margin;
* the second object may cover at most 50% of the first object's pixels; a violating object is
  resampled up to 50 times, after which the image keeps one object (and its label says so);
* one background grey per image drawn from [0, 0.45] and one grey per object from [0.55, 1.0],
  as uint8 levels; with probability 0.5 the image is inverted (dark shapes on light ground);
* later objects are painted over earlier ones (occlusion); pixels are filled when their centre
  lies inside the polygon (no anti-aliasing);
* labels: 0 T, 1 P, 2 E, 3 T+P, 4 P+E, 5 T+E, 6 T+T, 7 P+P, 8 E+E. The prior is therefore
  unbalanced (1/6 per single shape, 1/9 per mixed pair, 1/18 per same-shape pair);
  ``balanced=True`` draws the 9 classes uniformly instead.

Choices the sources leave open, written down: the first rotation is uniform in [0, 2 pi); the
overlap test counts pixels exactly instead of G1's geometric estimate; pixels scale to [0, 1]
(``scale="unit"``) or [-1, 1] (``scale="symmetric"``, G1's ``neg=True``).

Two generators draw these images (``generator=``): ``counter`` (the default,
:mod:`fastff.data.shapeset_counter`), where every image is a function of its index alone, so
that batches render in parallel and the GPU (``fastff/kernels/cuda/shapeset.cu``) draws the very
same pixels; and ``sequential``, NumPy's Mersenne Twister seeded per block of 1000 images and
drawn image after image (the default before version 0.2: a run record without
``shapeset_generator`` was drawn by it). They are two streams: the same seed gives other images
under each.
"""
import math

import numpy as np
from numba import njit

from ..checks import choose, positive, seed as check_seed
from ..errors import InputError
from .sources import check_fits_memory
from .base import ArrayDataset, Dataset
from ..shapeset_spec import (BG_LEVELS, FG_LEVELS, N_VERTICES, OVERLAP_MAX,  # noqa: F401
                             REJECTION_MAX, ROTATIONS, SCALE_MAX, SCALE_MIN, SIZE, angle_table,
                             check_stream)

SHAPE_NAMES = ("triangle", "parallelogram", "ellipse")
CLASS_NAMES = ("T", "P", "E", "T+P", "P+E", "T+E", "T+T", "P+P", "E+E")
BLOCK = 1000            # images generated per seeded block of the stream
SCALES = {"unit": (1 / 255.0, 0.0), "symmetric": (2 / 255.0, -1.0)}
GENERATORS = {"sequential": "sequential", "counter": "counter"}
GENERATOR = "counter"           # the default stream
GENERATOR_BEFORE = "sequential"  # the stream of records that do not name theirs

# (shape a, shape b) -> class id; a single shape uses b = -1.
_PAIR = np.array([[6, 3, 5], [3, 7, 4], [5, 4, 8]], np.int64)
# class id -> (shape a, shape b or -1)
_CLASS_SHAPES = np.array([[0, -1], [1, -1], [2, -1], [0, 1], [1, 2], [0, 2], [0, 0], [1, 1],
                          [2, 2]], np.int64)


@njit(cache=True)
def _polygon(kind, size):
    """Vertices (x, y) in pixel units of one random object, placed inside the image."""
    n = N_VERTICES[kind]
    theta = np.random.random() * 2 * math.pi
    s1 = SCALE_MIN + (SCALE_MAX - SCALE_MIN) * np.random.random()
    s2 = SCALE_MIN + (SCALE_MAX - SCALE_MIN) * np.random.random()
    sx, sy = max(s1, s2) * size, min(s1, s2) * size
    phi = 2 * math.pi * np.random.randint(0, ROTATIONS) / ROTATIONS
    cp, sp = math.cos(phi), math.sin(phi)
    vx = np.empty(n)
    vy = np.empty(n)
    for k in range(n):
        a = theta + 2 * math.pi * k / n
        px, py = 0.5 * math.cos(a) * sx, 0.5 * math.sin(a) * sy
        vx[k] = cp * px - sp * py
        vy[k] = sp * px + cp * py
    # translate: the bounding box must lie in [1, size - 1] (1-pixel margin)
    tx = 1 - vx.min() + np.random.random() * max(0.0, (size - 2) - (vx.max() - vx.min()))
    ty = 1 - vy.min() + np.random.random() * max(0.0, (size - 2) - (vy.max() - vy.min()))
    return vx + tx, vy + ty


@njit(cache=True)
def _spans(vx, vy, size, left, right):
    """Per image row, the columns [left, right) whose pixel centres lie inside the polygon."""
    n = vx.shape[0]
    area = 0
    for r in range(size):
        yc = r + 0.5
        lo, hi = np.inf, -np.inf
        for k in range(n):
            x1, y1 = vx[k], vy[k]
            x2, y2 = vx[(k + 1) % n], vy[(k + 1) % n]
            if (y1 <= yc <= y2 or y2 <= yc <= y1) and y1 != y2:
                xc = x1 + (yc - y1) * (x2 - x1) / (y2 - y1)
                lo, hi = min(lo, xc), max(hi, xc)
        if lo > hi:
            left[r], right[r] = 0, 0
            continue
        c0 = max(0, int(math.ceil(lo - 0.5)))
        c1 = min(size, int(math.floor(hi - 0.5)) + 1)
        left[r], right[r] = c0, max(c0, c1)
        area += right[r] - left[r]
    return area


@njit(cache=True)
def _render(seed, n, size, balanced, images, labels, n_objects):
    np.random.seed(seed)
    l1 = np.empty(size, np.int64)
    r1 = np.empty(size, np.int64)
    l2 = np.empty(size, np.int64)
    r2 = np.empty(size, np.int64)
    for m in range(n):
        if balanced:
            cls = np.random.randint(0, 9)
            a, b = _CLASS_SHAPES[cls, 0], _CLASS_SHAPES[cls, 1]
        else:
            a = np.random.randint(0, 3)
            b = np.random.randint(0, 3) if np.random.randint(1, 3) == 2 else -1
        bg = np.random.randint(BG_LEVELS[0], BG_LEVELS[1] + 1)
        fg1 = np.random.randint(FG_LEVELS[0], FG_LEVELS[1] + 1)
        fg2 = np.random.randint(FG_LEVELS[0], FG_LEVELS[1] + 1)
        if np.random.random() < 0.5:  # dark shapes on a light background
            bg, fg1, fg2 = 255 - bg, 255 - fg1, 255 - fg2
        img = images[m]
        img[:] = bg
        vx, vy = _polygon(a, size)
        area1 = _spans(vx, vy, size, l1, r1)
        for r in range(size):
            img[r * size + l1[r]: r * size + r1[r]] = fg1
        placed = 1
        if b >= 0:
            for _ in range(REJECTION_MAX + 1):
                vx, vy = _polygon(b, size)
                _spans(vx, vy, size, l2, r2)
                covered = 0
                for r in range(size):
                    covered += max(0, min(r1[r], r2[r]) - max(l1[r], l2[r]))
                if covered <= OVERLAP_MAX * area1:
                    for r in range(size):
                        img[r * size + l2[r]: r * size + r2[r]] = fg2
                    placed = 2
                    break
        labels[m] = _PAIR[a, b] if placed == 2 else a
        n_objects[m] = placed


def generate(n, seed=0, balanced=False, size=SIZE, generator=GENERATOR, first=0):
    """Generate ``n`` Shapeset-3x2 images as uint8.

    Parameters
    ----------
    n : int
        Number of images.
    seed : int
        Same seed, same images.
    balanced : bool
        Draw the 9 classes uniformly instead of G1's unbalanced prior.
    size : int
        Width and height in pixels (32 in the paper).
    generator : str
        ``sequential`` or ``counter`` (see the module's docstring).
    first : int
        ``counter`` only: the index of the first image in the seed's stream.

    Returns
    -------
    images : ndarray (n, size * size) uint8
    labels : ndarray (n,) int64
    n_objects : ndarray (n,) int64, 1 or 2
    """
    positive("n", n, integer=True)
    choose("generator", generator, GENERATORS)
    if generator == "counter":
        levels, labels, n_objects = render_counter(counter_key(seed), first, n, balanced,
                                                   (1.0, 0.0), size)
        return levels.astype(np.uint8), labels, n_objects
    if first:
        raise InputError("first= needs generator='counter': the sequential stream is drawn in "
                         "order")
    seed32 = int(np.random.SeedSequence(check_seed(seed)).generate_state(1)[0])
    images = np.empty((n, size * size), np.uint8)
    labels = np.empty(n, np.int64)
    n_objects = np.empty(n, np.int64)
    _render(seed32, int(n), size, bool(balanced), images, labels, n_objects)
    return images, labels, n_objects


def counter_key(*seed):
    """The counter generator's Philox key (two 32-bit words) of a seed or seed path."""
    words = np.random.SeedSequence([check_seed(s) for s in seed]).generate_state(2)
    return int(words[0]), int(words[1])


def render_counter(key, first, n, balanced, scale=SCALES["unit"], size=SIZE):
    """Images ``first .. first + n - 1`` of the counter stream ``key``, rendered on the CPU as
    float32 ``level * mul + add`` for ``scale = (mul, add)``; returns (images, labels,
    n_objects)."""
    from . import shapeset_counter as counter
    check_stream(key, first, n)
    images = np.empty((n, size * size), np.float32)
    labels = np.empty(n, np.int64)
    n_objects = np.empty(n, np.int64)
    counter.render(np.uint64(key[0]), np.uint64(key[1]), int(first), int(n), int(size),
                   bool(balanced), angle_table(), np.float32(scale[0]),
                   np.float32(scale[1]), images, labels, n_objects)
    return images, labels, n_objects


def to_float(images, scale="unit"):
    """uint8 pixels to float32 in [0, 1] (``unit``) or [-1, 1] (``symmetric``)."""
    mul, add = choose("scale", scale, SCALES)
    return images.astype(np.float32) * np.float32(mul) + np.float32(add)


class Shapeset(Dataset):
    """Shapeset-3x2 as an online stream plus fixed validation and test sets.

    Training images come from seeds disjoint from those of the evaluation sets; the stream is
    cut into seeded blocks of 1000 images, so batch k is reproducible on its own.

    ``finite=N`` trains on a fixed set instead: the first N images of the same stream, visited
    in a fresh seeded permutation every epoch (as :class:`~fastff.data.ArrayDataset` does). The
    paper's SVM baseline and its finite-set Tanh N net use 100,000 (the paper's §5).

    ``generator="counter"`` (the default) draws every image from its index alone, the same on
    the CPU and the GPU; ``"sequential"`` is the older stream (the module's docstring).

    ``eval_seed`` draws the validation and test sets apart from the training stream (default:
    ``seed``): runs of several seeds, each with a training stream of its own, are then scored
    on one test set and can be compared example by example.
    """

    name = "shapeset"

    def __init__(self, seed=0, valid_size=10_000, test_size=10_000, balanced=False, scale="unit",
                 finite=None, generator=GENERATOR, eval_seed=None):
        self.seed, self.balanced, self.scale = check_seed(seed), bool(balanced), scale
        self.eval_seed = self.seed if eval_seed is None else check_seed(eval_seed)
        choose("scale", scale, SCALES)
        self.generator = choose("generator", generator, GENERATORS)
        self.n_in, self.n_classes = SIZE * SIZE, 9
        positive("valid_size", valid_size, integer=True)
        positive("test_size", test_size, integer=True)
        if finite is not None:
            positive("finite", finite, integer=True)
        # float32 images plus the uint8 originals, checked before anything is allocated
        check_fits_memory((valid_size + test_size + (finite or 0)) * SIZE * SIZE * 5,
                          "the Shapeset evaluation sets" + (" and finite training set" if finite else ""))
        self.valid = self._fixed(1, valid_size)
        self.test = self._fixed(2, test_size)
        self._block_index, self._block = None, None
        self.finite = None
        if finite is not None:
            # filled block by block: the memory checked above, not a second copy of the set
            x = np.empty((finite, self.n_in), self.valid[0].dtype)
            y = np.empty(finite, self.valid[1].dtype)
            for start in range(0, finite, BLOCK):
                bx, by = self._train_block(start // BLOCK)
                x[start:start + BLOCK], y[start:start + BLOCK] = bx[:finite - start], by[:finite - start]
            self.finite = ArrayDataset(self.name, (x, y), self.valid, self.test, self.n_classes,
                                       self.seed)
            self._block_index, self._block = None, None  # the stream's cache is not needed

    def _seed(self, *key, seed=None):
        seed = self.seed if seed is None else seed
        return int(np.random.SeedSequence([seed, *key]).generate_state(1)[0])

    def _fixed(self, which, n):
        """The validation (``which`` 1) or test (2) set, drawn from ``eval_seed``."""
        if self.generator == "counter":
            return render_counter(counter_key(self.eval_seed, which), 0, n, self.balanced,
                                  SCALES[self.scale])[:2]
        images, labels, _ = generate(n, self._seed(which, seed=self.eval_seed), self.balanced)
        return to_float(images, self.scale), labels

    def _train_block(self, index):
        if index != self._block_index:
            if self.generator == "counter":  # the block is a slice of one endless stream
                self._block = render_counter(counter_key(self.seed, 0), index * BLOCK, BLOCK,
                                             self.balanced, SCALES[self.scale])[:2]
            else:
                images, labels, _ = generate(BLOCK, self._seed(0, index), self.balanced)
                self._block = (to_float(images, self.scale), labels)
            self._block_index = index
        return self._block

    def device_batch(self, k, batch_size, backend):
        """Training batch k made on the device of ``backend`` (one whose kernels are the CUDA
        ones): a finite set's gathered from its staged copy; the counter stream's rendered
        there with the bits of :meth:`train_batch`, into buffers this dataset reuses (the
        batch is valid until the next call); None for the sequential stream."""
        if self.finite is not None:
            return self.finite.device_batch(k, batch_size, backend)
        if self.generator != "counter":
            return None
        return backend.render_shapeset_batch(self.__dict__.setdefault("_device_buffers", {}),
                                             counter_key(self.seed, 0), k * batch_size,
                                             batch_size, self.balanced, SCALES[self.scale])

    def train_batch(self, k, batch_size):
        if self.finite is not None:
            return self.finite.train_batch(k, batch_size)
        start = k * batch_size
        xs, ys = [], []
        while len(xs) == 0 or sum(len(y) for y in ys) < batch_size:
            have = sum(len(y) for y in ys)
            block, offset = divmod(start + have, BLOCK)
            x, y = self._train_block(block)
            take = min(batch_size - have, BLOCK - offset)
            xs.append(x[offset:offset + take])
            ys.append(y[offset:offset + take])
        return (xs[0], ys[0]) if len(xs) == 1 else (np.concatenate(xs), np.concatenate(ys))


def shapeset_stream(seed=0, batch_size=10, balanced=False, scale="unit", generator=GENERATOR):
    """Endless iterator of training minibatches (x, y), the way the paper trains online."""
    data = Shapeset(seed, valid_size=1, test_size=1, balanced=balanced, scale=scale,
                    generator=generator)
    k = 0
    while True:
        yield data.train_batch(k, batch_size)
        k += 1
