"""Command-line flags of the keyword arguments of a public function, from one table.

:func:`fastff.sweep` and :func:`fastff.reproduce` each keep a tuple of :class:`Flag` beside
them (``SWEEP_FLAGS``, ``REPRODUCE_FLAGS``); the ``fastff`` command adds their flags with
:func:`add_flags` and calls the function with :func:`flag_values`, so a keyword is named once
for the function and its command (``tests/test_seam.py`` keeps each table equal to its
function's signature). ``fastff train``'s flags come from :mod:`fastff.training.options`.
"""
from dataclasses import dataclass, field

from .errors import InputError


@dataclass(frozen=True)
class Flag:
    """One keyword argument of a function, as a command-line flag.

    Attributes
    ----------
    name : str
        The keyword.
    help : str
        ``--help``'s text.
    flag : str
        The flag (default: ``--name-with-dashes``).
    default
        The command line's default (None: the function's own default applies).
    invert : bool
        A boolean keyword set by a flag that says the opposite (``--quiet`` for
        ``progress=True``, ``--no-train`` for ``train=True``).
    cli : dict
        Further argparse arguments (``type``, ``choices``, ``metavar``).
    """

    name: str
    help: str
    flag: str = ""
    default: object = None
    invert: bool = False
    cli: dict = field(default_factory=dict)

    def option_string(self):
        return self.flag or "--" + self.name.replace("_", "-")


def add_flags(parser, flags):
    """One argparse flag per entry of ``flags``."""
    for f in flags:
        if f.invert:
            parser.add_argument(f.option_string(), dest=f.name, action="store_true",
                                help=f.help)
        else:
            parser.add_argument(f.option_string(), dest=f.name, default=f.default, help=f.help,
                                **f.cli)


def flag_values(args, flags):
    """The keyword arguments that the flags of ``flags`` put on ``args``."""
    return {f.name: (not getattr(args, f.name)) if f.invert else getattr(args, f.name)
            for f in flags}


def check_table(function, flags, positional=()):
    """Raise InputError unless ``flags`` names every keyword of ``function`` but
    ``positional``, in its order (what keeps a table and its function together)."""
    import inspect
    names = [p for p in inspect.signature(function).parameters if p not in positional]
    if [f.name for f in flags] != names:
        raise InputError(f"the flags of {function.__name__} ({[f.name for f in flags]}) are not "
                         f"its keywords ({names})")
