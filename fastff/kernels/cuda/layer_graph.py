"""The layer-by-layer training step captured in a CUDA graph (:class:`LayerGraph`): the step
of batches the persistent kernel does not take (fastff/kernels/cuda/step.py), one graph launch
a step; and what tells whether a prepared step still serves a model's step."""
import numpy as np

from .runtimes import runtime


class LayerGraph:
    """The layer-by-layer step of one model, batch size, statistics object, activation and cost,
    captured in a CUDA graph on its first run and replayed after: a step is then two input
    copies, one graph launch and a copy of the loss into the runtime's loss ring.

    The graph reads the batch from its own input buffers and the learning rate from the
    runtime's rate buffer (:meth:`~fastff.kernels.cuda.Runtime.rate`), so one capture serves
    every batch and rate. Build it after an ordinary step of the same shape has made every
    buffer (the capture may not allocate).
    """

    def __init__(self, params, activation, batch, workspace, stats, loss, layers, rt=None):
        rt = runtime() if rt is None else rt
        self.rt, self.batch, self.stats = rt, batch, stats
        self.activation, self.loss_name, self.layers = activation, loss, layers
        self.workspace, self.stream = workspace, rt.stream()
        self.arrays = [a for W, b in params for a in (W, b)]
        self.versions = versions(stats)
        self.dtype = np.dtype(params[0][0].dtype)
        self.x = rt.empty((batch, params[0][0].shape[0]), self.dtype)
        self.y = rt.empty(batch, np.int64)
        self.loss_slot = rt.zeros(1, np.float64)  # the captured cost's own, outside the ring
        self.graph = self.loss = None

    def matches(self, params, batch, stats, activation, loss, workspace):
        """Whether this graph runs a step of these (the same arrays, on the current stream)."""
        return (same_step(self, batch, activation, loss) and stats is self.stats
                and versions(stats) == self.versions and workspace is self.workspace
                and all(a is b for a, b in zip(self.arrays, (a for W, b in params
                                                             for a in (W, b)))))

    def run(self, x, y, lr):
        """One step on device arrays ``x`` and ``y``; returns the loss (a device scalar)."""
        self.x[...] = x
        self.y[...] = y
        self.rt.rate(lr, self.dtype)  # written before the graph runs, in stream order
        if self.graph is None:
            with self.rt.capture(self.loss_slot) as graph:
                self.loss = self.layers(self.x, self.y, lr, self.stats, None)
            self.graph = graph
        self.graph.launch()
        out = self.rt.loss_slots()
        out[...] = self.loss
        return out.reshape(())


def same_step(launch, batch, activation, loss):
    """Whether a StepLaunch or LayerGraph was built for a step of ``batch`` rows with
    ``activation`` and ``loss``, on the current stream (its buffers must not be shared by
    launches in flight on two streams)."""
    return (batch == launch.batch and launch.stream == launch.rt.stream()
            and launch.activation == activation and launch.loss_name == loss)


def versions(stats):
    """What identifies the arrays of a StepStats: its layers' assignment counts."""
    if stats is None:
        return None
    return tuple(s.version for s in (*stats.forward, *stats.backward))
