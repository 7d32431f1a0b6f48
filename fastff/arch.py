"""Architectures: parse and validate layer sizes.

Accepted forms:

* a list of ints including input and output: ``[1024, 1000, 1000, 9]`` (for :class:`MLP`);
* a full string: ``"1024-1000x5-9"`` (``x`` repeats a width, ``-`` separates groups);
* hidden layers only: ``"1000x5"`` (one group, no ``-``) or a list ``[1000] * 5``, completed
  with the dataset's input and output sizes by :func:`fastff.train`.

Where a dataset is known (:func:`fastff.train`), a string with ``-`` is always read as full
sizes, and its first and last sizes must be the dataset's: ``"1024-9"`` on Shapeset-3x2 is
softmax regression, and ``"784-20-10"`` on Shapeset-3x2 is an error, never a silent
``1024-784-20-10-9``.
"""
import re

from .errors import InputError

_GROUP = re.compile(r"^\s*(\d+)\s*(?:x\s*(\d+))?\s*$")


def parse_hidden(spec):
    """Return the list of widths a spec describes (without adding input/output sizes)."""
    if isinstance(spec, str):
        sizes = []
        for group in spec.split("-"):
            m = _GROUP.match(group)
            if not m:
                raise InputError(f"cannot parse architecture {spec!r}: group {group!r} is not "
                                 f"'WIDTH' or 'WIDTHxREPEAT' (example: '1024-1000x5-9')")
            width, repeat = int(m.group(1)), int(m.group(2) or 1)
            if repeat < 1:
                raise InputError(f"architecture {spec!r}: repeat count must be >= 1")
            sizes += [width] * repeat
    else:
        try:
            sizes = [int(s) for s in spec]
        except (TypeError, ValueError):
            raise InputError(f"architecture must be a string or a list of ints, got {spec!r}") from None
        if any(int(s) != s for s in spec):
            raise InputError(f"architecture {spec!r} holds non-integer sizes")
    if not sizes or any(s < 1 for s in sizes):
        raise InputError(f"architecture {spec!r} must list positive widths")
    return sizes


def parse_sizes(spec, n_in=None, n_out=None):
    """Full layer sizes ``[n_in, hidden..., n_out]``.

    With ``n_in`` and ``n_out`` given (a dataset's), a string with ``-`` holds full sizes that
    must start with ``n_in`` and end with ``n_out``; any other spec (one group such as
    ``"1000x5"``, or a list) holds hidden widths only. Without them the spec must be complete
    (at least input and output).
    """
    sizes = parse_hidden(spec)
    if n_in is None and n_out is None:
        if len(sizes) < 2:
            raise InputError(f"architecture {spec!r} needs at least an input and an output size")
        return sizes
    if isinstance(spec, str) and "-" in spec:
        if len(sizes) < 2 or sizes[0] != n_in or sizes[-1] != n_out:
            hidden = sizes[1:-1] if len(sizes) > 2 else sizes
            raise InputError(
                f"architecture {spec!r} gives full sizes from {sizes[0]} to {sizes[-1]}, but the "
                f"dataset has {n_in} inputs and {n_out} classes; write "
                f"'{'-'.join(map(str, [n_in, *hidden, n_out]))}', or the hidden widths alone as "
                f"a list: {hidden}")
        return sizes
    return [n_in, *sizes, n_out]
