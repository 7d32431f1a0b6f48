"""Ctrl-C and SIGTERM during a run: finish the step, keep the work, stop cleanly.

Inside :class:`StopRequests` (installed by the trainer, the sweep and the reproduction in the
main thread), the first SIGINT or SIGTERM only sets a flag while the code is at a place where it
can stop cleanly (``deferring``); the trainer looks at the flag after each step, writes its
checkpoint and record, and raises :class:`Interrupted`. Elsewhere, and on a second signal, the
handler raises at once: files are written atomically, so that cannot damage a record. The
command line turns :class:`Interrupted` into a one-line message and the status 128 + signal
(130 for SIGINT, 143 for SIGTERM), without a traceback.
"""
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM after saving what it could.

    Attributes
    ----------
    signum : int
        The signal.
    status : int
        The exit status a command should end with: 128 + signal.
    update : int or None
        The update the run's checkpoint holds (None when nothing was saved).
    """

    def __init__(self, message, signum=signal.SIGINT, update=None):
        super().__init__(message)
        self.signum, self.update = int(signum), update
        self.status = 128 + self.signum

    def __str__(self):
        return self.args[0] if self.args else "interrupted"


class StopRequests:
    """A context that catches SIGINT and SIGTERM (in the main thread; elsewhere it does
    nothing, and signals go to whoever handles them there).

    ``signum`` is the first signal received while ``deferring`` was true (None: none).
    """

    def __init__(self):
        self.signum, self.deferring, self._old = None, False, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            for s, handler in self._old.items():
                signal.signal(s, handler)
            self._old = None
        return False

    def _handle(self, signum, frame):
        if self.deferring and self.signum is None:
            self.signum = signum  # the loop stops after this step
            return
        raise Interrupted(f"interrupted ({signal.Signals(signum).name})", signum)

    @property
    def requested(self):
        return self.signum is not None
