"""Networks between fastff and PyTorch: :meth:`fastff.MLP.to_torch` and
:meth:`fastff.MLP.from_torch` (PyTorch is optional: ``pip install torch``).

A fastff MLP is, in PyTorch, an ``nn.Sequential`` of ``nn.Linear`` layers with the hidden
activation after each but the last (``nn.Sigmoid``, ``nn.Tanh``, ``nn.Softsign``, ``nn.ReLU``:
the same functions as :mod:`fastff.activations`). The module returns the logits, what
``nn.CrossEntropyLoss`` takes; fastff's softmax is ``torch.softmax(module(x), 1)``.

Layouts differ: fastff's ``W`` is (n_in, n_out), so that a layer is ``x @ W + b``; PyTorch's
``Linear.weight`` is (n_out, n_in). The weights are copied across transposed, so a round trip
keeps every bit.
"""
import numpy as np

from .errors import FastffError, InputError

# the hidden activations, by fastff name and by PyTorch module class name
TORCH_ACTIVATIONS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "softsign": "Softsign", "relu": "ReLU"}
_FROM_TORCH = {cls: name for name, cls in TORCH_ACTIVATIONS.items()}
_DTYPES = {"float32": "float32", "float64": "float64"}


def torch_module():
    """PyTorch, or a clear error saying how to install it."""
    try:
        import torch
    except ImportError:
        raise FastffError("moving networks to and from PyTorch needs PyTorch: "
                          "pip install torch") from None
    return torch


def build(sizes, activation, params, dtype, device):
    """The ``nn.Sequential`` of a fastff network: ``params`` are its (W, b) pairs on the host,
    W of shape (n_in, n_out); each is copied, transposed, into a new ``nn.Linear``."""
    torch = torch_module()
    nn = torch.nn
    layers = []
    for k, (W, b) in enumerate(params):
        linear = nn.Linear(sizes[k], sizes[k + 1], dtype=getattr(torch, dtype))
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
            linear.bias.copy_(torch.from_numpy(np.ascontiguousarray(b)))
        layers.append(linear)
        if k < len(params) - 1:
            layers.append(getattr(nn, TORCH_ACTIVATIONS[activation])())
    return nn.Sequential(*layers).to(device)


def _flat(module):
    """The layers of a Sequential, nested Sequentials opened."""
    nn = torch_module().nn
    for layer in module:
        if isinstance(layer, nn.Sequential):
            yield from _flat(layer)
        else:
            yield layer


def read(module):
    """What :meth:`fastff.MLP.from_torch` needs of a plain PyTorch MLP: ``(sizes, activation,
    params, dtype, device)``, with ``params`` the (W, b) pairs as NumPy arrays in fastff's
    layout: host views of the module's parameters (copied from a GPU), which the caller
    copies (:meth:`fastff.MLP.from_torch` copies them into the model's own arrays).

    Accepted: an ``nn.Sequential`` (nested ones opened) of ``nn.Linear`` layers with biases,
    one hidden activation of :data:`TORCH_ACTIVATIONS` after each but the last, optionally an
    ``nn.Flatten`` first and an ``nn.Softmax`` or ``nn.LogSoftmax`` over the classes last
    (fastff's output is a softmax: these change no prediction). Anything else is refused
    with the layer that fastff cannot represent.
    """
    torch = torch_module()
    nn = torch.nn
    if not isinstance(module, nn.Sequential):
        raise InputError(f"from_torch reads a plain MLP, an nn.Sequential of Linear layers and "
                         f"activations; got {type(module).__name__}")
    layers = list(_flat(module))
    if layers and isinstance(layers[0], nn.Flatten):
        layers = layers[1:]
    if layers and isinstance(layers[-1], (nn.Softmax, nn.LogSoftmax)):
        if layers[-1].dim not in (1, -1):
            raise InputError(f"the final {type(layers[-1]).__name__} is over dim "
                             f"{layers[-1].dim}; fastff's softmax is over the classes (dim 1)")
        layers = layers[:-1]
    linears, activations = layers[0::2], layers[1::2]

    def refuse(k, why):
        raise InputError(f"layer {k} of the module ({type(layers[k]).__name__}): {why}; "
                         "fastff's MLP is Linear layers with biases and one activation "
                         f"({', '.join(_FROM_TORCH)}) between them")
    for k, layer in enumerate(layers):
        if k % 2 == 0 and not isinstance(layer, nn.Linear):
            refuse(k, "expected a Linear layer here")
        if k % 2 == 1 and type(layer).__name__ not in _FROM_TORCH:
            refuse(k, "expected a hidden activation here")
        if k % 2 == 1 and type(layer) not in {getattr(nn, c) for c in _FROM_TORCH}:
            refuse(k, "a subclass of PyTorch's activation may compute something else")
    if not linears or len(activations) != len(linears) - 1:
        raise InputError("from_torch needs Linear layers with an activation between each two, "
                         f"ending with a Linear; got {[type(l).__name__ for l in layers]}")
    kinds = {_FROM_TORCH[type(a).__name__] for a in activations}
    if len(kinds) > 1:
        raise InputError(f"fastff's MLP has one hidden activation; this module mixes "
                         f"{', '.join(sorted(kinds))}")
    sizes = [linears[0].in_features]
    for k, linear in enumerate(linears):
        if linear.bias is None:
            raise InputError(f"Linear layer {k} has no bias; fastff's layers all have one")
        if linear.in_features != sizes[-1]:
            raise InputError(f"Linear layer {k} takes {linear.in_features} inputs but the layer "
                             f"below gives {sizes[-1]}")
        sizes.append(linear.out_features)
    tensors = [t for linear in linears for t in (linear.weight, linear.bias)]
    dtypes = {str(t.dtype).removeprefix("torch.") for t in tensors}
    devices = {t.device.type for t in tensors}
    if len(dtypes) != 1 or not dtypes <= set(_DTYPES):
        raise InputError(f"fastff's MLP is float32 or float64 throughout; this module's "
                         f"parameters are {', '.join(sorted(dtypes))}")
    if len(devices) != 1 or not devices <= {"cpu", "cuda"}:
        raise InputError(f"the module's parameters must all be on the CPU or all on one CUDA "
                         f"GPU; they are on {', '.join(sorted(devices))}")
    with torch.no_grad():
        params = [(linear.weight.detach().cpu().numpy().T, linear.bias.detach().cpu().numpy())
                  for linear in linears]
    for k, (W, b) in enumerate(params):
        if not (np.isfinite(W).all() and np.isfinite(b).all()):
            raise InputError(f"Linear layer {k} holds NaN or inf")
    activation = kinds.pop() if kinds else None
    return sizes, activation, params, dtypes.pop(), devices.pop()
