"""Lightning classes: the module only trains (one step is the COT gradient-flow step, docs/math.md);
the data module hands out the full batch or seeded minibatches."""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import lightning as pl
import torch

from ..data import Dataset, Minibatches, RepeatBatch
from ..model.layered import MeanFieldResNet
from ..model.replicas import ReplicatedResNet
from ..record import flow_time_step, learning_rate


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
        # the step is ours (training_step): Lightning's automatic loop adds closures, result collections and
        # hook lookups that cost as much as the step itself on small models; its hooks, checkpoints and
        # callbacks (on_before_optimizer_step included) stay
        self.automatic_optimization = False

    def __setattr__(self, name, value):
        # Lightning sets _current_fx_name (a str) around each of the ~12 hooks of every step; nn.Module's
        # __setattr__ checks parameters, buffers and submodules first, which is most of Lightning's
        # per-step cost on small models. A str is none of those.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def tau(self, r: int = 0) -> float:
        """The flow time of one step of member r."""
        return flow_time_step(self.dts[r], self.net.L, self.net.M, self.parameterization)

    def training_step(self, batch, batch_idx):
        """One step of the flow: the risk of the step's particles, its gradient, the SGD update (whose
        on_before_optimizer_step hooks record and log the step)."""
        x, y = batch
        optimizer = self.optimizers()
        optimizer.zero_grad()
        if self.cuda_graphs:
            # each step is a new replay: its outputs may overwrite the previous step's
            torch.compiler.cudagraph_mark_step_begin()
        risks = self.risk_fn(x, y)
        # a copy: a graph replay reuses its output buffers, and callbacks read this after backward
        self.last_risk = risks.detach().clone()
        self.manual_backward((self.loss_weights * risks).sum() if self.replicated else risks)
        optimizer.step()
        if self.depth_lr_factor is not None:  # before any callback (a checkpoint) sees the depths
            from ..model.depth import fold_depth

            with torch.no_grad():  # the model is invariant under the fold: it only undoes a discrete overshoot
                self.net.s.copy_(fold_depth(self.net.s))

    def step_numbers(self) -> torch.Tensor:
        """(4,) float64: the risk of this step's particles and the norms |dL/du|, |dL/dw|, |dL/db| (one network;
        one fused norm call)."""
        return torch.stack([self.last_risk.reshape(()), *torch._foreach_norm(self.theta_grads())]).double()

    def gathered(self) -> Optional[COTFlowModule]:
        """This module with the whole network, where a job's rows are written (one process: itself; see
        job.parallel.ShardedFlowModule for a rank's shard)."""
        return self

    def member_net(self, r: int) -> MeanFieldResNet:
        """Member r's network: the network itself, or replica r of a ReplicatedResNet (sharing storage,
        detached)."""
        return self.net.replica(r) if self.replicated else self.net

    def theta(self) -> List[torch.nn.Parameter]:
        return [self.net.u, self.net.w, self.net.b]

    def theta_grads(self) -> List[torch.Tensor]:
        """The current step's gradients of u, w, b (one network)."""
        return [self.net.u.grad, self.net.w.grad, self.net.b.grad]

    @property
    def members(self) -> int:
        """R: the replicas stepped together, or 1."""
        return self.net.R if self.replicated else 1

    def member_tensors(self, grads: bool) -> List[torch.Tensor]:
        """The particles (or the current step's risk gradients, valid between backward and the optimizer step)
        with a leading member dim: (R, L, M, d), (R, L, M, d), (R, L, M)[, (R, L, M) depths]. A replica's
        gradient is that of its own risk (the loss weights divided out); a moving depth's gradient enters as
        sqrt(kappa) dL/ds, so that G = L M sum |grad|^2 is the flow's metric norm."""
        params = self.theta() + ([self.net.s] if self.depth_lr_factor is not None else [])
        out = [p.grad if grads else p.detach() for p in params]
        if not self.replicated:
            out = [t.unsqueeze(0) for t in out]
        elif grads:
            out = [g / self.loss_weights.view(-1, *[1] * (g.dim() - 1)) for g in out]
        if grads and self.depth_lr_factor is not None:
            out[3] = out[3] * self.depth_lr_factor**0.5
        return out

    def member_lrs(self) -> torch.Tensor:
        """(R,): each member's learning rate (a replica's own dt)."""
        return self.lr * self.loss_weights.double()

    def depth_steps(self) -> Optional[torch.Tensor]:
        """(1,): the rms depth move sqrt(mean |delta s|^2) of this step (depths moving), else None."""
        if self.depth_lr_factor is None:
            return None
        return (self.lr * self.depth_lr_factor * self.net.s.grad.pow(2).mean().sqrt()).reshape(1)

    def zero_member_grads(self, stop) -> None:
        """Make this step a no-op for the members in the (R,) bool mask `stop` (converged or diverged)."""
        keep = torch.as_tensor(~stop)
        for p in self.net.parameters():
            if p.grad is None:
                continue
            if self.replicated:
                p.grad.mul_(keep.to(p.grad.device, p.grad.dtype).view(-1, *[1] * (p.grad.dim() - 1)))
            elif not bool(keep[0]):
                p.grad.zero_()

    def configure_optimizers(self):
        groups = [{"params": self.theta(), "lr": self.lr}]
        if self.depth_lr_factor is not None:
            groups.append({"params": [self.net.s], "lr": self.lr * self.depth_lr_factor})
        return torch.optim.SGD(groups, lr=self.lr)



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
