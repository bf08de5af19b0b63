"""Callbacks that keep a job's files: a stop on request (signals), checkpoints (written atomically,
read once)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import lightning as pl
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from ..rundir.contract import CHECKPOINT_FORMAT


class StopOnRequest(pl.Callback):
    """Ends training after the current step when `requested` is set (SIGTERM, SIGINT, pre-emption)."""

    def __init__(self):
        self.requested: Optional[int] = None  # the signal number

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.requested is not None:
            trainer.should_stop = True


class PreloadedCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint reader, handed the checkpoint the job's checks already loaded (and checked):
    a resumed job reads its checkpoint once. Any other path is read as usual."""

    def __init__(self, path, checkpoint: dict):
        super().__init__()
        self.path, self.checkpoint = Path(path), checkpoint

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        if self.checkpoint is not None and Path(path) == self.path:
            checkpoint, self.checkpoint = self.checkpoint, None
            return checkpoint
        return super().load_checkpoint(path, weights_only=weights_only)


class Checkpointer(pl.Callback):
    """Writes <run dir>/checkpoints/last.ckpt (atomically) every `every` steps (0: never mid-run), when
    asked to (`request()`, e.g. by a SLURM pre-emption signal), and at the end of training: particles,
    optimizer, loops, every flow record, RNG states and `extra` (identity, wandb run ids)."""

    def __init__(self, path, every: int, extra: dict):
        super().__init__()
        self.path, self.every, self.extra = path, every, extra
        self.pending: List = []  # callables to run once a requested checkpoint is written

    def request(self, then=None) -> None:
        self.pending.append(then or (lambda: None))

    def save(self, trainer, final: bool = False) -> None:
        from ..rundir.atomic import atomic_torch_save
        from .resume import rng_states

        ckpt = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        if not trainer.is_global_zero:  # the other ranks took part in gathering the particles; rank 0 writes
            return
        ckpt["cotresnet"] = {**self.extra, "rng": rng_states(), "global_step": trainer.global_step, "final": final,
                             "format": CHECKPOINT_FORMAT}
        atomic_torch_save(ckpt, self.path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (self.every and trainer.global_step % self.every == 0) or self.pending:
            self.save(trainer)
        while self.pending:
            self.pending.pop(0)()

    def on_train_end(self, trainer, pl_module):
        self.save(trainer, final=True)

