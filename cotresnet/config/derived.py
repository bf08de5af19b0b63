"""Values derived from a configuration and the data's shape alone (no torch): what a run, its report and its
audit must agree on."""
from __future__ import annotations


def kernel_samples(callbacks, n_train: int, d_out: int) -> int:
    """How many training samples the kernels use: callbacks.n_probe, or the whole training set while the
    tangent kernel (n d_out square) stays within callbacks.kernel_max_dim."""
    if callbacks.n_probe is not None:
        return min(callbacks.n_probe, n_train)
    return max(1, min(n_train, callbacks.kernel_max_dim // d_out))
