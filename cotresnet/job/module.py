"""Lightning classes: the module only trains (one step is the COT gradient-flow step, docs/math.md);
the data module hands out the full batch or seeded minibatches."""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Union

import lightning as pl
import torch

from ..data import Dataset, Minibatches, RepeatBatch
from ..model.layered import MeanFieldResNet
from ..model.replicas import ReplicatedResNet
from ..record import flow_time_step, learning_rate


class ReplicaView(NamedTuple):
    """What the callbacks read of one (replica of a) network: `net` (detached for a replica), the
    risk of the step's particles, the Euclidean gradient of that risk, the flow time of the step
    (tau = lr / (L M)) and the learning rate."""

    net: MeanFieldResNet
    risk: torch.Tensor
    grads: List[torch.Tensor]
    tau: float
    lr: float
    depth_step: Optional[float] = None  # depth-mobile particles under the Wasserstein flow: sqrt(mean |delta s|^2)


class COTFlowModule(pl.LightningModule):
    """theta -= lr * dL/dtheta on the full batch (or a minibatch), lr = learning_rate(dt, L, M, ...).

    With a ReplicatedResNet and per-replica steps dt_r, the loss is sum_r (dt_r / dt_0) L_r and
    lr = learning_rate(dt_0, ...): replica r moves by learning_rate(dt_r, ...) * dL_r/dtheta_r.
    """

    def __init__(self, net, dt: Union[float, Sequence[float]], parameterization: str, compile: str = "none",
                 geometry: str = "cot", depth_weight: float = 1.0):
        super().__init__()
        self.net = net
        # depth-mobile particles: the COT flow keeps their depths (no gradient), the Wasserstein flow moves
        # them with the depth weight kappa: s -= kappa lr dL/ds
        self.depth_lr_factor = depth_weight if geometry == "wasserstein" else None
        if hasattr(net, "s"):
            net.s.requires_grad_(self.depth_lr_factor is not None)
        self.replicated = isinstance(net, ReplicatedResNet)
        self.dts = [float(v) for v in dt] if self.replicated else [float(dt)]
        self.parameterization = parameterization
        self.lr = learning_rate(self.dts[0], net.L, net.M, parameterization)
        self.register_buffer("loss_weights", torch.tensor([v / self.dts[0] for v in self.dts], dtype=net.u.dtype))
        self.last_risk = None  # risk(s) of the particles before the current update, read by callbacks
        risk = net.risks if self.replicated else net.risk
        # the full batch has static shapes: one compiled graph (CUDA graphs with reduce-overhead)
        self.risk_fn = risk if compile == "none" else torch.compile(risk, mode=compile)
        self.cuda_graphs = compile == "reduce-overhead"

    def __setattr__(self, name, value):
        # Lightning sets _current_fx_name (a str) around each of the ~12 hooks of every step; nn.Module's
        # __setattr__ checks parameters, buffers and submodules first, which is most of Lightning's
        # per-step cost on small models. A str is none of those.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def tau(self, replica: Optional[int] = None) -> float:
        """The flow time of one step of this network (replica)."""
        return flow_time_step(self.dts[replica or 0], self.net.L, self.net.M, self.parameterization)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.cuda_graphs:
            # each step is a new replay: its outputs may overwrite the previous step's
            torch.compiler.cudagraph_mark_step_begin()
        risks = self.risk_fn(x, y)
        # a copy: a graph replay reuses its output buffers, and callbacks read this after backward
        self.last_risk = risks.detach().clone()
        return (self.loss_weights * risks).sum() if self.replicated else risks

    def replica_net(self, replica: Optional[int] = None) -> MeanFieldResNet:
        """The network, or replica r of a ReplicatedResNet (sharing storage, detached)."""
        return self.net if replica is None else self.net.replica(replica)

    def theta(self) -> List[torch.nn.Parameter]:
        return [self.net.u, self.net.w, self.net.b]

    def view(self, replica: Optional[int] = None) -> ReplicaView:
        """The current step's risk and gradient (valid between backward and the optimizer step); a moving
        depth's gradient enters as sqrt(kappa) dL/ds, so that G = L M sum |grad|^2 is the flow's metric norm."""
        if replica is None:
            grads, depth_step = [p.grad for p in self.theta()], None
            if self.depth_lr_factor is not None:
                grads.append(self.net.s.grad * self.depth_lr_factor**0.5)
                depth_step = self.lr * self.depth_lr_factor * self.net.s.grad.pow(2).mean().sqrt().item()
            return ReplicaView(self.net, self.last_risk, grads, self.tau(), self.lr, depth_step)
        c = self.loss_weights[replica].item()
        return ReplicaView(self.net.replica(replica), self.last_risk[replica],
                           [p.grad[replica] / c for p in self.net.parameters()], self.tau(replica), self.lr * c)

    def zero_replica_grads(self, replica: Optional[int] = None) -> None:
        """Make this step a no-op for one replica (a diverged or converged one), or for the network."""
        for p in self.net.parameters():
            if replica is None:
                p.grad = torch.zeros_like(p) if p.requires_grad else None
            else:
                p.grad[replica].zero_()

    def configure_optimizers(self):
        groups = [{"params": self.theta(), "lr": self.lr}]
        if self.depth_lr_factor is not None:
            groups.append({"params": [self.net.s], "lr": self.lr * self.depth_lr_factor})
        return torch.optim.SGD(groups, lr=self.lr)

    def optimizer_step(self, *args, **kwargs):
        super().optimizer_step(*args, **kwargs)
        if self.depth_lr_factor is not None:  # before any callback (a checkpoint) sees the depths
            from ..model.depth import fold_depth

            with torch.no_grad():  # the model is invariant under the fold: it only undoes a discrete overshoot
                self.net.s.copy_(fold_depth(self.net.s))


class FlowDataModule(pl.LightningDataModule):
    """Full batch by default: the whole training set is one batch, moved to the device once and
    handed out `steps` times without collation. With `batch_size`, seeded shuffled minibatches."""

    def __init__(self, dataset: Dataset, steps: int, batch_size: Optional[int] = None, seed: int = 0, start: int = 0):
        super().__init__()
        self.start = start  # a resumed run continues the minibatch sequence at its step
        self.dataset = dataset
        self.steps = steps
        self.batch_size = batch_size
        self.seed = seed

    def train_dataloader(self):
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        x, y = self.dataset.x_train.to(device), self.dataset.y_train.to(device)
        if self.batch_size is None:
            return RepeatBatch((x, y), self.steps)
        return Minibatches(x, y, self.batch_size, self.steps, self.seed, self.start)
