"""The LightningModule: it only trains. One step is the COT gradient-flow step (design.md section 2)."""
from __future__ import annotations

import lightning as pl
import torch

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
