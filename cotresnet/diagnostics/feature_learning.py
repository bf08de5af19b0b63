"""The feature-learning meter: how far a run left its kernel (lazy) regime. Pure float64 functions, no Lightning.

All three quantities compare the network at step k with the network at initialization mu_0, on the samples the
flow trains on (x: (n, d_in), the training set: the linearized model's identity below needs the flow's own
samples):

- kernel movement  ||K_t - K_0||_F / ||K_0||_F, K = L M J J^T the COT tangent kernel, (n d_out, n d_out);
- distance from linearization  ||f_t - f_t^lin|| / ||f_t - f_0||  (depth-muP / CompleteP's "relative distance
  from linearization"): f^lin(theta) = f_0 + J_0 (theta - theta_0) is the linearized model around mu_0 trained by
  the same steps. A step theta <- theta - tau L M grad_theta risk (tau: the step's flow time, optim.dt under
  mean_field) moves the linear model's outputs by -tau L M J_0 J_0^T r / n, so its residual r = f^lin - y
  (stacked rows (i, k), as K's) evolves exactly as
      r_{k+1} = (I - tau K_0 / n) r_k,   r_k = V diag((1 - tau lambda / n)^k) V^T r_0  (K_0 = V diag(lambda) V^T);
  0 in the kernel regime, of order 1 once the features move;
- feature movement per layer  ||F_l(t) - F_l(0)||_F / ||F_l(0)||_F, F_l[i, m] = sigma(w_{l,m} . x_l^i + b_{l,m})
  the features of layer l on its own states x_l^i (n, M).

A run logs them at its kernel steps (`meter_row`, from the kernel its diagnostics built, K_0 kept once, and the
features of both networks recomputed block by block: nothing of size L n M is held); a study computes all three
post hoc from a run's initial and final networks with `feature_learning(init_net, final_net, x, y, steps, dt)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch import Tensor

from ..model.layered import MeanFieldResNet
from .kernels import Preactivations, tangent_kernel


def kernel_movement(K_t: Tensor, K_0: Tensor) -> float:
    """||K_t - K_0||_F / ||K_0||_F for two kernels of the same samples: (m, m) each."""
    return float(torch.linalg.matrix_norm(K_t - K_0) / torch.linalg.matrix_norm(K_0))


def linearized_residual(K_0, r_0: Tensor, steps: int, dt: float) -> Tensor:
    """r_k = (I - dt K_0 / n)^k r_0 after k = `steps` steps: the residual of the linearized model trained by the
    flow's steps. K_0: (n d_out, n d_out) on the n training samples, rows (i, k), or its eigendecomposition
    (lambda, V) (computed once, any k is then two products); r_0: (n, d_out) -> (n, d_out); dt: the flow time
    of one step."""
    lam, V = torch.linalg.eigh(K_0.double()) if isinstance(K_0, Tensor) else K_0
    factor = (1.0 - dt * lam / r_0.shape[0]) ** steps
    return (V @ (factor * (V.T @ r_0.double().reshape(-1)))).reshape(r_0.shape)


def linearization_distance(f_t: Tensor, f_lin: Tensor, f_0: Tensor) -> float:
    """||f_t - f_t^lin|| / ||f_t - f_0|| (any shapes, all the same); NaN before the outputs moved."""
    moved = float(torch.linalg.vector_norm((f_t - f_0).double()))
    return float(torch.linalg.vector_norm((f_t - f_lin).double())) / moved if moved > 0 else math.nan


def layer_features(net: MeanFieldResNet, x: Tensor) -> Tensor:
    """F_l = sigma(x_l w_l^T + b_l) of every layer on the network's own states: (L, n, M), float64."""
    net = net.detached(dtype="float64")
    with torch.no_grad():
        X = net.states(net.embed(x.to(net.u.device, torch.float64)))
        Z = Preactivations(net, X)
        return torch.stack([net.sigma(Z[l]) for l in range(net.L)])


def feature_movement(F_t: Tensor, F_0: Tensor) -> Tensor:
    """||F_l(t) - F_l(0)||_F / ||F_l(0)||_F per layer: (L,) from F_t, F_0: (L, n, M)."""
    return torch.linalg.matrix_norm(F_t - F_0) / torch.linalg.matrix_norm(F_0)


@dataclass(frozen=True)
class Reference:
    """What the meter compares with, computed once at mu_0 on the training samples: K_0 (n d_out, n d_out),
    f_0 (n, d_out) the outputs, F_0 (L, n, M) the features; float64."""

    K_0: Tensor
    f_0: Tensor
    F_0: Tensor


def outputs(net: MeanFieldResNet, x: Tensor) -> Tensor:
    """R X_1(x): (n, d_out), float64."""
    net = net.detached(dtype="float64")
    with torch.no_grad():
        return net(x.to(net.u.device, torch.float64))


def reference(init_net: MeanFieldResNet, x: Tensor) -> Reference:
    """K_0, f_0 and F_0 of the initial network on x: (n, d_in)."""
    net64 = init_net.detached(dtype="float64")
    x64 = x.to(net64.u.device, torch.float64)
    return Reference(tangent_kernel(net64, x64), outputs(net64, x64), layer_features(net64, x64))


@dataclass(frozen=True)
class FeatureLearning:
    """The meter at one step: kernel movement, distance from linearization, feature movement per layer (L,)."""

    kernel_movement: float
    linearization_distance: float
    feature_movement: Tensor

    def row(self) -> Dict[str, float]:
        """As columns; feature_movement is the mean over layers, feature_movement_max the largest."""
        return {"kernel_movement": self.kernel_movement, "linearization_distance": self.linearization_distance,
                "feature_movement": float(self.feature_movement.mean()),
                "feature_movement_max": float(self.feature_movement.max())}


def measure(net: MeanFieldResNet, x: Tensor, y: Tensor, K_0: Tensor, f_0: Tensor, F_0: Tensor, step: int,
            dt: float) -> FeatureLearning:
    """The meter of the network after `step` steps of flow time dt each, against the reference (K_0, f_0, F_0)
    of mu_0 on the same training samples x: (n, d_in), y: (n, d_out)."""
    net64 = net.detached(dtype="float64")
    x64, y64 = x.to(net64.u.device, torch.float64), y.to(net64.u.device, torch.float64)
    f_lin = y64 + linearized_residual(K_0, f_0 - y64, step, dt)
    return FeatureLearning(kernel_movement(tangent_kernel(net64, x64), K_0),
                           linearization_distance(outputs(net64, x64), f_lin, f_0),
                           feature_movement(layer_features(net64, x64), F_0))


def feature_learning_row(net: MeanFieldResNet, x: Tensor, y: Tensor, K_0: Tensor, f_0: Tensor, F_0: Tensor,
                         step: int, dt: float) -> Dict[str, float]:
    """`measure` as columns (for a callback's rows): kernel_movement, linearization_distance, feature_movement
    (mean over layers), feature_movement_max."""
    return measure(net, x, y, K_0, f_0, F_0, step, dt).row()


def feature_learning(init_net: MeanFieldResNet, final_net: MeanFieldResNet, x: Tensor, y: Tensor, steps: int,
                     dt: float) -> FeatureLearning:
    """The meter of a run from its initial and final networks (run.init, run.final), its training samples
    x: (n, d_in), y: (n, d_out), the steps it took and the flow time of one step."""
    ref = reference(init_net, x)
    return measure(final_net, x, y, ref.K_0, ref.f_0, ref.F_0, steps, dt)


def states(net: MeanFieldResNet, x: Tensor) -> Tensor:
    """X at the layer boundaries on x: (n, d_in) -> (L + 1, n, d), float64."""
    net = net.detached(dtype="float64")
    with torch.no_grad():
        return net.states(net.embed(x.to(net.u.device, torch.float64)))


def feature_movement_blocks(net: MeanFieldResNet, init_net: MeanFieldResNet, x: Tensor,
                            memory_budget: int = 2**28, X_t: Optional[Tensor] = None,
                            X_0: Optional[Tensor] = None) -> Tensor:
    """feature_movement of net against init_net on x: (n, d_in), per layer (L,), float64, over blocks of
    particles within `memory_budget` bytes: F_l of both networks are never held whole. X_t, X_0: the
    networks' states on x (L + 1, n, d), when the caller has them."""
    from .kernels import particle_chunks

    nets = [m.detached(dtype="float64") for m in (net, init_net)]
    with torch.no_grad():
        X = [X_t if X_t is not None else states(net, x), X_0 if X_0 is not None else states(init_net, x)]
        Z = [Preactivations(m, s) for m, s in zip(nets, X)]
        out = []
        for l in range(net.L):
            num = den = 0.0
            for c in particle_chunks(net.M, 8 * 4 * x.shape[0], memory_budget):
                F_t, F_0 = nets[0].sigma(Z[0].chunk(l, c)), nets[1].sigma(Z[1].chunk(l, c))
                num += float((F_t - F_0).pow(2).sum())
                den += float(F_0.pow(2).sum())
            out.append(math.sqrt(num / den) if den > 0 else math.nan)
    return torch.tensor(out, dtype=torch.float64)


def meter_row(net: MeanFieldResNet, init_net: MeanFieldResNet, x: Tensor, y: Tensor, K_t: Tensor, K_0: Tensor,
              f_0: Tensor, steps: int, dt: Optional[float], eig_0=None, X_t: Optional[Tensor] = None,
              X_0: Optional[Tensor] = None) -> Dict[str, Optional[float]]:
    """The meter's metrics.csv columns at a kernel step, from the kernels both evaluations built on the same
    samples x: (n, d_in). `dt` (a step's flow time) is None where the linearized flow is not this flow's
    (minibatch SGD, or kernel samples that are a probe of the training set): no linearization distance.
    `eig_0`: K_0's eigendecomposition (lambda, V), kept by a caller that measures at many steps; X_t, X_0:
    the networks' states on x, when the caller has them (the kernels' own)."""
    movement = feature_movement_blocks(net, init_net, x, X_t=X_t, X_0=X_0)
    row = {"kernel_movement": kernel_movement(K_t, K_0), "feature_movement": float(movement.mean()),
           "feature_movement_max": float(movement.max()), "linearization_distance": None}
    if dt is not None:
        y64 = y.to(K_0.device, torch.float64)
        f_lin = y64 + linearized_residual(K_0 if eig_0 is None else eig_0, f_0 - y64, steps, dt)
        f_t = outputs(net, x) if X_t is None else X_t[-1] @ net.readout.T.to(X_t)
        row["linearization_distance"] = linearization_distance(f_t, f_lin, f_0)
    return row

