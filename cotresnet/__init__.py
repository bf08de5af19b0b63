"""cotresnet: infinitely deep and wide ResNets trained as Conditional Optimal Transport gradient flows.

The public API (README, "Using cotresnet from Python"), imported on first use: `import cotresnet` loads no
torch (Hydra imports this package whenever it scans for plugins, shell completion included).

    cfg = cotresnet.compose_config(["model.L=8"])        the typed configuration of a list of overrides
    summaries = cotresnet.run_job(cfg, "runs/a")        check and train a job in a directory
    run = cotresnet.load_run("runs/a")                  summary, metrics, init and final networks, data
    sweep = cotresnet.load_sweep("multirun/...")        one row per job of a sweep
"""
from importlib import import_module

__version__ = "0.1.0"

_PUBLIC = {
    "compose_config": "cotresnet.config.compose",
    "run_job": "cotresnet.api",
    "load_run": "cotresnet.api",
    "load_sweep": "cotresnet.api",
    "Run": "cotresnet.api",
    "NetworkSpec": "cotresnet.model.spec",
    "MeanFieldResNet": "cotresnet.model.layered",
    "network_from_meta": "cotresnet.model.build",
    "kernel_diagnostics": "cotresnet.diagnostics.measures",
    "risk_and_grad_norm2": "cotresnet.diagnostics.measures",
    "distances": "cotresnet.diagnostics.measures",
    "tangent_kernel": "cotresnet.diagnostics.kernels",
    "cot_distance_bracket": "cotresnet.diagnostics.transport",
    "diagnose": "cotresnet.report.diagnose",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    """PEP 562: a public name is imported from its module the first time it is asked for."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'cotresnet' has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
