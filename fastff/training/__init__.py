"""Training: :func:`train` and what it is made of.

``options.py`` defines every training option once (default, check, help, how a resumed run
treats it); ``trainer.py`` is the loop (:class:`Trainer`: steps, evaluations, monitoring,
checkpoints, divergence); ``many.py`` trains several runs at once (:func:`train_many`);
``resume.py`` continues a recorded run; ``signals.py`` turns Ctrl-C and SIGTERM into a
checkpoint and a clean stop; ``warmup.py`` compiles the kernels before the
clock starts; ``pretrain.py`` is the denoising auto-encoder phase of Fig. 11.
"""
from . import options
from .signals import Interrupted
from .trainer import Run, Trainer
from .many import train_many


def train(arch="1000x5", **kwargs):
    return Trainer(arch, options.check(kwargs)).run()


train.__signature__ = options.signature(train)
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

__all__ = ["train", "train_many", "Run", "Trainer", "Interrupted", "options"]
