"""Lightning classes: the module only trains (one step is the COT gradient-flow step, design.md
section 2); the data module hands out the full batch or seeded minibatches."""
from __future__ import annotations

from typing import Optional

import lightning as pl
import torch

from .data import Dataset, Minibatches, RepeatBatch
from .model import MeanFieldResNet


def learning_rate(dt: float, L: int, M: int, parameterization: str) -> float:
    """The SGD learning rate of a flow step dt: `mean_field` multiplies by L M so that
    d theta / dt = -L M dL/dtheta (the COT gradient flow, independent of L and M); `standard` does not."""
    return dt * L * M if parameterization == "mean_field" else dt


class COTFlowModule(pl.LightningModule):
    """theta -= lr * dL/dtheta on the full batch (or a minibatch), lr = learning_rate(dt, L, M, ...)."""

    def __init__(self, net: MeanFieldResNet, dt: float, parameterization: str):
        super().__init__()
        self.net = net
        self.dt = dt
        self.parameterization = parameterization
        self.lr = learning_rate(dt, net.L, net.M, parameterization)
        self.last_risk = None  # risk of the particles before the current update, read by callbacks

    def training_step(self, batch, batch_idx):
        x, y = batch
        risk = self.net.risk(x, y)
        self.last_risk = risk.detach()
        return risk

    def configure_optimizers(self):
        return torch.optim.SGD(self.net.parameters(), lr=self.lr)


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
