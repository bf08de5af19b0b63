"""The residual's activation sigma, its derivative in closed form, and its fused backward.

relu is allowed but lies outside the theory's regularity assumptions (non-smooth residuals).
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

ACTIVATION_FUNCTIONS = {
    "tanh": torch.tanh,
    "silu": F.silu,
    "gelu": F.gelu,
    "softplus": F.softplus,
    "relu": torch.relu,
}

_RELU_WARNED = False


def activation(name: str):
    """sigma by name. relu warns once: it lies outside the theory's regularity assumptions."""
    global _RELU_WARNED
    if name == "relu" and not _RELU_WARNED:
        _RELU_WARNED = True
        warnings.warn(
            "activation=relu breaks the regularity assumptions of the COT gradient-flow theory "
            "(non-smooth residuals): uniqueness of the flow and the P-L certificate are not covered.",
            stacklevel=2,
        )
    return ACTIVATION_FUNCTIONS[name]


def activation_derivative(name: str, z: Tensor) -> Tensor:
    """sigma'(z), elementwise, in closed form (used by the structured tangent kernel)."""
    if name == "tanh":
        return 1.0 - torch.tanh(z) ** 2
    if name == "silu":
        s = torch.sigmoid(z)
        return s * (1.0 + z * (1.0 - s))
    if name == "gelu":
        return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0))) + z * torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    if name == "softplus":
        return torch.sigmoid(z)
    if name == "relu":
        return (z > 0).to(z.dtype)
    raise KeyError(name)


# sigma's backward as ATen's fused kernels do it, grad * sigma'(.) in one pass, reading sigma's
# output (tanh, relu) or its input (silu, gelu, softplus): what a layer must keep for backward.
ACTIVATION_VJP = {
    "tanh": (True, lambda g, h: torch.ops.aten.tanh_backward(g, h)),
    "relu": (True, lambda g, h: torch.ops.aten.threshold_backward(g, h, 0)),
    "silu": (False, lambda g, z: torch.ops.aten.silu_backward(g, z)),
    "gelu": (False, lambda g, z: torch.ops.aten.gelu_backward(g, z)),
    "softplus": (False, lambda g, z: torch.ops.aten.softplus_backward(g, z, 1, 20)),
}
