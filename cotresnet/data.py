"""Tasks: a teacher mean-field ResNet, scikit-learn's bundled datasets, or a saved data.pt. Nothing downloads."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict

import torch
from torch import Tensor

from .errors import ConfigError
from .model.layered import MeanFieldResNet
from .model.particles import embedding_matrix, init_particles, readout_matrix
from .model.spec import NetworkSpec
from .rundir.atomic import load_trusted

CLASSIFICATION = ("digits", "wine", "breast_cancer")
SPLITS = ("x_train", "y_train", "x_test", "y_test")


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
        return self.x_train.shape[-1]

    @property
    def d_out(self) -> int:
        return self.y_train.shape[-1]

    @property
    def n_train(self) -> int:
        return self.x_train.shape[-2]

    def to(self, dtype=None, device=None) -> Dataset:
        f = lambda t: t.to(dtype=dtype, device=device)
        return Dataset(f(self.x_train), f(self.y_train), f(self.x_test), f(self.y_test), self.classification)

    def tensors(self) -> Dict[str, object]:
        return {"x_train": self.x_train, "y_train": self.y_train, "x_test": self.x_test, "y_test": self.y_test,
                "classification": self.classification}


def teacher_network(tc, seed: int) -> MeanFieldResNet:
    """A random mean-field ResNet; its scale_u (`tc.scale`) sets how far the target is from the identity."""
    spec = NetworkSpec(L=tc.L, M=tc.M, d=tc.d, d_in=tc.d_in, d_out=tc.d_out, activation=tc.activation,
                       dtype="float64")
    p = init_particles(tc.L, tc.M, tc.d, scale_u=tc.scale, seed=seed + 1_000_003, dtype=torch.float64)
    return MeanFieldResNet(p, spec, embedding_matrix("pad", tc.d, tc.d_in, seed, torch.float64),
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


# digits' pixels are intensities in [0, 16]: one scale for all of them. Standardizing each pixel by its training
# spread would blow up the pixels that are (nearly) constant in the training split (a border pixel lit in 2 of
# 1348 images has std 0.03): the same test images then reach |x| ~ 100 and the test risk starts 3x the
# training risk on the same distribution
PIXEL_RANGE = {"digits": 16.0}


def sklearn_dataset(dc) -> Dataset:
    """Bundled data (shipped inside scikit-learn), seeded split. Tabular features and regression targets are
    standardized by scikit-learn's StandardScaler fitted on the training split; images (digits) are scaled to
    [0, 1] and centred by the training mean image (PIXEL_RANGE)."""
    import numpy as np
    import sklearn.datasets as skd
    from sklearn.preprocessing import StandardScaler

    bunch = getattr(skd, f"load_{dc.name}")()
    n = bunch.data.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(dc.seed)).numpy()
    n_test = int(round(dc.test_fraction * n))
    test, train = perm[:n_test], perm[n_test:]
    x = np.asarray(bunch.data, dtype=np.float64)
    if dc.name in PIXEL_RANGE:
        x = x / PIXEL_RANGE[dc.name]
        x = x - x[train].mean(0)
    else:
        x = StandardScaler().fit(x[train]).transform(x)
    if dc.name in CLASSIFICATION:
        y = np.eye(int(bunch.target.max()) + 1)[bunch.target]
    else:
        y = StandardScaler().fit(bunch.target[train, None]).transform(bunch.target[:, None])
    t = lambda a, idx: torch.as_tensor(a[idx], dtype=torch.float64)
    return Dataset(t(x, train), t(y, train), t(x, test), t(y, test), classification=dc.name in CLASSIFICATION)


def file_dataset(dc) -> Dataset:
    """A data.pt: x_train (N, d_in), y_train (N, d_out), x_test (N', d_in), y_test (N', d_out), real tensors."""
    where = f"data.path={dc.path!r}"
    path = Path(dc.path) if dc.path else None
    if path is None or not path.is_file():
        raise ConfigError(f"{where} is not a readable file; data.name=file needs a data.pt")
    try:
        raw = load_trusted(path)
    except ValueError as e:  # any unreadable or foreign file
        raise ConfigError(f"{where}: {e}") from e
    if not isinstance(raw, dict) or any(not isinstance(raw.get(k), Tensor) for k in SPLITS):
        raise ConfigError(f"{where} must hold the tensors {', '.join(SPLITS)}")
    sparse = [f"{k} ({raw[k].layout})" for k in SPLITS if raw[k].layout != torch.strided]
    if sparse:
        raise ConfigError(f"{where}: every split must be a dense tensor; {', '.join(sparse)} is not (.to_dense() it)")
    bad = [f"{k} {tuple(raw[k].shape)} {raw[k].dtype}" for k in SPLITS
           if raw[k].dim() != 2 or raw[k].is_complex() or raw[k].dtype == torch.bool]
    if bad:
        raise ConfigError(f"{where}: every split must be a real 2-D tensor (rows = samples); got {', '.join(bad)}")
    empty = [f"{k} {tuple(raw[k].shape)}" for k in ("x_train", "y_train") if raw[k].shape[1] == 0]
    if empty:
        raise ConfigError(f"{where}: inputs and outputs need at least one column; got {', '.join(empty)}")
    flag = raw.get("classification", False)
    if isinstance(flag, Tensor) and flag.numel() == 1 and flag.dtype == torch.bool:
        flag = bool(flag)
    if not isinstance(flag, bool):
        raise ConfigError(f"{where}: 'classification' must be true or false (a bool); got {flag!r}")
    t = {k: raw[k].to(torch.float64) for k in SPLITS}
    for split in ("train", "test"):
        if t[f"x_{split}"].shape[0] != t[f"y_{split}"].shape[0]:
            raise ConfigError(f"{where}: x_{split} has {t[f'x_{split}'].shape[0]} rows but y_{split} has "
                              f"{t[f'y_{split}'].shape[0]}")
    if t["x_test"].shape[0] and (t["x_test"].shape[1], t["y_test"].shape[1]) != (t["x_train"].shape[1], t["y_train"].shape[1]):
        raise ConfigError(f"{where}: test columns (x {t['x_test'].shape[1]}, y {t['y_test'].shape[1]}) differ from "
                          f"train columns (x {t['x_train'].shape[1]}, y {t['y_train'].shape[1]})")
    return Dataset(*(t[k] for k in SPLITS), classification=flag)


def stack_datasets(datasets) -> Dataset:
    """Replicas' datasets (same shapes) along a leading replica dimension: x_*: (R, N, d_in), ..."""
    return Dataset(*(torch.stack([getattr(d, k) for d in datasets]) for k in SPLITS),
                   classification=datasets[0].classification)


def check_finite(ds: Dataset, name: str, dtype: torch.dtype) -> None:
    """Every value finite once cast to the model's dtype (float64 data can overflow float32)."""
    for key in SPLITS:
        t = getattr(ds, key).to(dtype)
        if not torch.isfinite(t).all():
            row = int((~torch.isfinite(t)).reshape(t.shape[0], -1).any(1).nonzero()[0])
            raise ConfigError(f"data.name={name!r}: {key} contains NaN or infinity in {str(dtype).replace('torch.', '')} "
                              f"(first at row {row}); clean the data, or set model.dtype=float64 if it overflows")


def load_dataset(dc, dtype: torch.dtype = torch.float64) -> Dataset:
    """The dataset of a data config, checked finite in `dtype`. float64, before embedding."""
    if dc.name == "teacher":
        ds = teacher_dataset(dc)
    elif dc.name == "file":
        ds = file_dataset(dc)
    else:
        ds = sklearn_dataset(dc)
    check_finite(ds, dc.name, dtype)
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


def minibatch_indices(n: int, batch_size: int, seed: int, step: int, cache: dict) -> Tensor:
    """The sample indices of step `step`: epoch e = step // ceil(n / batch_size) draws one permutation
    from a generator seeded by (seed, e), so any step's batch is known without iterator state."""
    per_epoch = math.ceil(n / batch_size)
    epoch, k = divmod(step, per_epoch)
    if cache.get("epoch") != epoch:
        cache["epoch"] = epoch
        cache["perm"] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return cache["perm"][k * batch_size:(k + 1) * batch_size]


class Minibatches:
    """Steps `start`..`steps` - 1 of seeded minibatches (minibatch_indices): a resumed run regenerates them.

    Its length is `steps` whatever `start` is: Lightning counts a resumed run's steps within one epoch of
    `steps` batches (a shorter length would end that epoch early and replay batches in a new one)."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, steps: int, seed: int, start: int = 0):
        self.x, self.y, self.bs, self.steps, self.seed, self.start = x, y, batch_size, steps, seed, start

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        cache = {}
        for step in range(self.start, self.steps):
            idx = minibatch_indices(self.x.shape[0], self.bs, self.seed, step, cache).to(self.x.device)
            yield self.x[idx], self.y[idx]
