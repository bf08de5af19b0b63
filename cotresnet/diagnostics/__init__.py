"""What the theory talks about, measured: G and the P-L ratio, the tangent and feature kernels with their
certified spectra, W_COT and its bracket, the depth marginal. Pure tensor functions, no Lightning.
`from cotresnet import diagnostics as D` gives the measures (D.kernel_diagnostics, D.distances, ...)."""
from .measures import (
    DISTANCE_TARGET,
    KernelDiagnostics,
    accuracy,
    cot_distance,
    cot_distance_lower,
    cot_distance_upper,
    distances,
    evaluate,
    evaluate_members,
    fidelity_prediction,
    flatten_particles,
    grad_norm2,
    kernel_diagnostics,
    risk_and_grad_norm2,
)

__all__ = ["DISTANCE_TARGET", "KernelDiagnostics", "accuracy", "cot_distance", "cot_distance_lower",
           "cot_distance_upper", "distances", "evaluate", "evaluate_members", "fidelity_prediction",
           "flatten_particles", "grad_norm2", "kernel_diagnostics", "risk_and_grad_norm2"]
