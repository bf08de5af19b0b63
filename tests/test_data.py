"""The bundled datasets' preprocessing, against scikit-learn's own scaler (issue 22, item 6): tabular features
and regression targets exactly as StandardScaler fitted on the training split; digits' pixels on one scale, so
that the test risk starts where the training risk does (same distribution)."""
import numpy as np
import pytest
import sklearn.datasets as skd
import torch
from sklearn.preprocessing import StandardScaler

from cotresnet.config.compose import compose_config
from cotresnet.data import load_dataset
from cotresnet.model.build import student_network


def split(name, seed=0, fraction=0.25):
    bunch = getattr(skd, f"load_{name}")()
    perm = torch.randperm(len(bunch.target), generator=torch.Generator().manual_seed(seed)).numpy()
    n_test = int(round(fraction * len(bunch.target)))
    return bunch, perm[n_test:], perm[:n_test]


@pytest.mark.parametrize("name", ["wine", "diabetes", "breast_cancer"])
def test_tabular_features_are_standardized_exactly_as_scikit_learn_does(name):
    ds = load_dataset(compose_config([f"data={name}"]).data)
    bunch, train, test = split(name)
    scaler = StandardScaler().fit(bunch.data[train])
    np.testing.assert_allclose(ds.x_train.numpy(), scaler.transform(bunch.data[train]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ds.x_test.numpy(), scaler.transform(bunch.data[test]), rtol=0, atol=1e-12)
    if name == "diabetes":
        target = StandardScaler().fit(bunch.target[train, None])
        np.testing.assert_allclose(ds.y_test.numpy(), target.transform(bunch.target[test, None]), atol=1e-12)


def test_digits_pixels_share_one_scale_and_the_test_risk_starts_where_the_training_risk_does():
    bunch, train, test = split("digits")
    per_pixel = StandardScaler().fit(bunch.data[train]).transform(bunch.data[test])
    assert np.abs(per_pixel).max() > 30  # why not per pixel: near-constant pixels explode on test images
    cfg = compose_config(["data=digits", "model.d=64"])
    ds = load_dataset(cfg.data)
    assert ds.x_test.abs().max() <= 1 and ds.x_train.abs().max() <= 1
    net = student_network(cfg, ds.d_in, ds.d_out).detached(dtype="float64")
    with torch.no_grad():
        risk_train, risk_test = net.risk(ds.x_train, ds.y_train).item(), net.risk(ds.x_test, ds.y_test).item()
    assert abs(risk_test / risk_train - 1) < 0.15, (risk_train, risk_test)
