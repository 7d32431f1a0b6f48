"""Training: :func:`train` and what it is made of.

``options.py`` defines every training option once (default, check, help, how a resumed run
treats it); ``trainer.py`` is the loop (:class:`Trainer`: steps, evaluations, monitoring,
checkpoints, divergence); ``many.py`` trains several runs at once (:func:`train_many`);
``resume.py`` continues a recorded run; ``signals.py`` turns Ctrl-C and SIGTERM into a
checkpoint and a clean stop; ``warmup.py`` compiles the kernels before the
clock starts; ``pretrain.py`` is the denoising auto-encoder phase of Fig. 11.
"""
from . import options
from .options import Derived, TrainOptions
from .signals import Interrupted
from .trainer import Run, Trainer
from .many import train_many


# The keywords are TrainOptions' fields, written out so that an IDE and a type checker see
# them (tests/test_seam.py keeps them equal to the fields, in names, order and defaults).
def train(arch="1000x5", *, dataset="shapeset", activation="tanh", init="normalized", lr=0.01,
          batch_size=10, updates=20_000, device="cpu", seed=0, data_seed=None, eval_every=None,
          out_dir=None, progress=True, resume=False, overwrite=False, dtype="float32", tf32=False,
          data_options=None, data_dir=None, monitor_every=None, jacobian_every=None, loss="nll",
          pretrain=None, pretrain_updates=None, corruption=0.25, pretrain_lr=None, optimizer="sgd",
          damping=None, estimate_decay=None, checkpoint_every=300.0) -> Run:
    given = locals()
    return Trainer(arch, TrainOptions(**{o.name: given[o.name] for o in options.OPTIONS})).run()


train.__doc__ = options.docstring(
    """Train an MLP with SGD as in Glorot & Bengio (2010) and record the run.""",
    """
    Returns
    -------
    Run

    Raises
    ------
    DivergenceError
        When the loss becomes NaN or inf; the last good checkpoint is kept.
    RecordError
        When ``out_dir`` holds another run, or a file of the run to resume is damaged.
    Interrupted
        On SIGINT (Ctrl-C) or SIGTERM: the step in progress finishes, the checkpoint and the
        record are written, and ``resume=True`` continues the run as if nothing happened.
        A second signal stops at once (no file is left half-written).
    """)

__all__ = ["train", "train_many", "Run", "Trainer", "TrainOptions", "Derived", "Interrupted",
           "options"]
