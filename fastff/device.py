"""Devices: ``cpu`` (Numba kernels) and ``cuda`` (CuPy kernels on an NVIDIA GPU).

``import fastff`` never imports CuPy; asking for ``cuda`` where it cannot work raises one
:class:`~fastff.errors.DeviceError` that says what is missing.
"""
from .checks import choose
from .errors import DeviceError

DEVICES = {"cpu": "cpu", "cuda": "cuda"}


def cuda_status():
    """Return (ok, reason): whether CuPy imports and sees at least one CUDA GPU."""
    try:
        import cupy
    except ImportError as exc:
        return False, (f"device='cuda' needs CuPy, which is not installed ({exc}); "
                       "install it with: pip install 'fastff[cuda]'")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError when no driver is present
        return False, f"CuPy is installed but no CUDA GPU is usable: {exc}"
    if count < 1:
        return False, "CuPy is installed but no CUDA GPU is visible"
    return True, ""


def resolve(device):
    """Validate a device name and check that it can be used; return the canonical name."""
    name = choose("device", device, DEVICES)
    if name == "cuda":
        ok, reason = cuda_status()
        if not ok:
            raise DeviceError(reason)
    return name
