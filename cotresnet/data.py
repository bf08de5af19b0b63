"""Tasks: a teacher mean-field ResNet, scikit-learn's bundled datasets, or a saved data.pt. Nothing downloads."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict

import torch
from torch import Tensor

from .config import ConfigError
from .model import MeanFieldResNet, embedding_matrix, init_particles, readout_matrix

CLASSIFICATION = ("digits", "wine", "breast_cancer")


@dataclass
class Dataset:
    """Tensors before embedding: x_*: (N, d_in), y_*: (N, d_out); `classification` targets are one-hot."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    classification: bool = False

    @property
    def d_in(self) -> int:
        return self.x_train.shape[1]

    @property
    def d_out(self) -> int:
        return self.y_train.shape[1]

    def to(self, dtype=None, device=None) -> "Dataset":
        f = lambda t: t.to(dtype=dtype, device=device)
        return Dataset(f(self.x_train), f(self.y_train), f(self.x_test), f(self.y_test), self.classification)

    def tensors(self) -> Dict[str, Tensor]:
        return {"x_train": self.x_train, "y_train": self.y_train, "x_test": self.x_test, "y_test": self.y_test,
                "classification": self.classification}


def teacher_network(tc, seed: int) -> MeanFieldResNet:
    """A random mean-field ResNet; its scale_u (`tc.scale`) sets how far the target is from the identity."""
    p = init_particles(tc.L, tc.M, tc.d, "iid", tc.scale, 1.0, 1.0, seed + 1_000_003, torch.float64)
    return MeanFieldResNet(p["u"], p["w"], p["b"], tc.activation,
                           embedding_matrix("pad", tc.d, tc.d_in, seed, torch.float64),
                           readout_matrix("first", tc.d, tc.d_out, seed, torch.float64))


def teacher_dataset(dc) -> Dataset:
    tc = dc.teacher
    g = torch.Generator().manual_seed(dc.seed)
    n = dc.n_train + dc.n_test
    x = torch.randn(n, tc.d_in, generator=g, dtype=torch.float64)
    if tc.inputs == "sphere":
        x = x / x.norm(dim=1, keepdim=True)
    with torch.no_grad():
        y = teacher_network(tc, dc.seed)(x)
    y = y + tc.noise * torch.randn(y.shape, generator=g, dtype=torch.float64)
    return Dataset(x[: dc.n_train], y[: dc.n_train], x[dc.n_train:], y[dc.n_train:])


def sklearn_dataset(dc) -> Dataset:
    """Bundled data (shipped inside scikit-learn), seeded split, standardized with training statistics."""
    import sklearn.datasets as skd

    bunch = getattr(skd, f"load_{dc.name}")()
    x = torch.as_tensor(bunch.data, dtype=torch.float64)
    target = torch.as_tensor(bunch.target)
    n = x.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(dc.seed))
    n_test = int(round(dc.test_fraction * n))
    test, train = perm[:n_test], perm[n_test:]
    mean, std = x[train].mean(0), x[train].std(0)
    x = (x - mean) / torch.where(std > 0, std, torch.ones_like(std))
    if dc.name in CLASSIFICATION:
        y = torch.nn.functional.one_hot(target.long()).to(torch.float64)
    else:
        y = target.to(torch.float64)[:, None]
        y = (y - y[train].mean()) / y[train].std()
    return Dataset(x[train], y[train], x[test], y[test], classification=dc.name in CLASSIFICATION)


def file_dataset(dc) -> Dataset:
    path = Path(dc.path) if dc.path else None
    if path is None or not path.is_file():
        raise ConfigError(f"data.path={dc.path!r} is not a readable file; data.name=file needs a data.pt")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        return Dataset(*(raw[k].to(torch.float64) for k in ("x_train", "y_train", "x_test", "y_test")),
                       classification=bool(raw.get("classification", False)))
    except Exception as e:  # any unreadable or foreign file
        raise ConfigError(
            f"data.path={dc.path!r} is not a data.pt with x_train, y_train, x_test, y_test tensors: {e}"
        ) from e


def stack_datasets(datasets) -> Dataset:
    """Replicas' datasets (same shapes) along a leading replica dimension: x_*: (R, N, d_in), ..."""
    return Dataset(*(torch.stack([getattr(d, k) for d in datasets]) for k in ("x_train", "y_train", "x_test", "y_test")),
                   classification=datasets[0].classification)


def check_finite(ds: Dataset, name: str) -> None:
    for key, t in ds.tensors().items():
        if isinstance(t, Tensor) and not torch.isfinite(t).all():
            row = int((~torch.isfinite(t)).reshape(t.shape[0], -1).any(1).nonzero()[0])
            raise ConfigError(f"data.name={name!r}: {key} contains NaN or infinity (first at row {row}); "
                              "clean the data before training")


def load_dataset(dc) -> Dataset:
    """The dataset of a data config, checked finite. float64, before embedding."""
    if dc.name == "teacher":
        ds = teacher_dataset(dc)
    elif dc.name == "file":
        ds = file_dataset(dc)
    else:
        ds = sklearn_dataset(dc)
    check_finite(ds, dc.name)
    if ds.x_train.shape[0] == 0:
        raise ConfigError(f"data.name={dc.name!r} has an empty training set")
    return ds


class RepeatBatch:
    """The same batch `steps` times: no collation, no copies."""

    def __init__(self, batch, steps: int):
        self.batch, self.steps = batch, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return itertools.repeat(self.batch, self.steps)


class Minibatches:
    """`steps` minibatches; epoch e's order is a permutation seeded by (seed, e), so a resumed run
    can regenerate it without saved iterator state."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, steps: int, seed: int, start: int = 0):
        self.x, self.y, self.bs, self.steps, self.seed, self.start = x, y, batch_size, steps, seed, start

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self):
        n = self.x.shape[0]
        per_epoch = math.ceil(n / self.bs)
        perm_epoch, perm = None, None
        for step in range(self.start, self.steps):
            epoch, k = divmod(step, per_epoch)
            if epoch != perm_epoch:  # one permutation per epoch, not per step
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                perm_epoch, perm = epoch, torch.randperm(n, generator=gen).to(self.x.device)
            idx = perm[k * self.bs:(k + 1) * self.bs]
            yield self.x[idx], self.y[idx]
