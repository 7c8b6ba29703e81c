"""Normalizers, generated from the registry and fitted on a real Sentinel-2 sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.core.errors import DataError
from bench.data.normalizers import NotFittedError
from bench.data.quantiles import StreamingQuantiles
from bench.core.registry import get_registry

NORMS = get_registry().names("norm")


def _train(ukis):
    img, msk = ukis
    return [(img[:, :, :384], np.ones((512, 384), bool))]


@pytest.mark.parametrize("name", NORMS)
def test_fit_transform_and_state_round_trip(name, ukis):
    norm = get_registry().get("norm", name).build().fit(_train(ukis))
    x = ukis[0][:, 256:, 384:]
    y = norm.transform(x)
    assert y.shape == x.shape and np.isfinite(y).all()
    restored = get_registry().get("norm", name).build().load_state_dict(norm.state_dict())
    np.testing.assert_array_equal(restored.transform(x), y)
    t = norm.transform(torch.from_numpy(x[None]))  # batched torch input gives the same numbers
    np.testing.assert_allclose(t[0].numpy(), y, rtol=1e-5, atol=1e-6)


def test_percentile_maps_training_p1_p99_to_0_and_1(ukis):
    (img, valid), = _train(ukis)
    norm = get_registry().get("norm", "percentile").build().fit([(img, valid)])
    p1, p99 = np.percentile(img.reshape(6, -1), [1, 99], axis=1)
    span = img.reshape(6, -1).max(1) - img.reshape(6, -1).min(1)
    assert np.all(np.abs(np.array(norm.p_low) - p1) <= 1e-3 * span)  # the documented bound: 0.1 % of range
    assert np.all(np.abs(np.array(norm.p_high) - p99) <= 1e-3 * span)
    y = norm.transform(img)
    np.testing.assert_allclose(norm.transform(np.array(norm.p_low, np.float32)[:, None, None]).ravel(), 0, atol=1e-6)
    np.testing.assert_allclose(norm.transform(np.array(norm.p_high, np.float32)[:, None, None]).ravel(), 1, atol=1e-6)
    assert y.min() == 0 and y.max() == 1
    frac_low = (y == 0).reshape(6, -1).mean(1)
    assert np.all(np.abs(frac_low - 0.01) < 0.005)  # about 1 % of training pixels clip at 0


def test_zscore_gives_zero_mean_unit_variance_on_training_data(ukis):
    (img, valid), = _train(ukis)
    y = get_registry().get("norm", "zscore").build().fit([(img[:, :256], valid[:256]), (img[:, 256:], valid[256:])])
    y = y.transform(img).reshape(6, -1).astype(np.float64)
    np.testing.assert_allclose(y.mean(1), 0, atol=1e-4)
    np.testing.assert_allclose(y.std(1), 1, atol=1e-4)


def test_nodata_is_left_out_of_the_fit(ukis):
    (img, valid), = _train(ukis)
    dirty = img.copy()
    dirty[:, :10] = np.nan
    valid = valid.copy()
    valid[:10] = False
    a = get_registry().get("norm", "zscore").build().fit([(dirty, valid)])
    b = get_registry().get("norm", "zscore").build().fit([(img[:, 10:], None)])
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-9)


@pytest.mark.parametrize("name", ["percentile", "zscore"])
def test_transform_before_fit_raises(name, ukis):
    with pytest.raises(NotFittedError, match="not fitted"):
        get_registry().get("norm", name).build().transform(ukis[0])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("name", ["percentile", "zscore"])
def test_nan_or_inf_in_fit_data_is_refused(name, bad, ukis):
    img = ukis[0][:, :64, :64].copy()
    img[2, 5, 5] = bad
    with pytest.raises(DataError, match="band 2: 1 NaN or inf"):
        get_registry().get("norm", name).build().fit([(img, None)])


def test_band_count_mismatch_is_refused(ukis):
    norm = get_registry().get("norm", "percentile").build().fit(_train(ukis))
    with pytest.raises(DataError, match="fitted on 6 bands, got an input with 13"):
        norm.transform(np.zeros((13, 8, 8), np.float32))


def test_streaming_quantiles_coarsen_and_stay_within_bound():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(0.2, 0.01, 5000), rng.gamma(2.0, 0.1, 20000), rng.uniform(-0.3, 1.7, 3000)]
    q = StreamingQuantiles(1, bins=1024)
    for c in chunks:  # the first chunk is narrow, later ones force the grid to coarsen and extend
        q.update(0, c)
    data = np.concatenate(chunks)
    bound = 4 * (data.max() - data.min()) / 1024
    for p in (0.0, 0.01, 0.5, 0.99, 1.0):
        assert abs(q.quantile(p)[0] - np.quantile(data, p)) <= bound
    assert q.counts.sum() == data.size and q.counts.shape == (1, 1024)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=300), st.floats(0, 1))
def test_streaming_quantile_property(values, p):
    data = np.array(values)
    q = StreamingQuantiles(1, bins=256)
    for chunk in np.array_split(data, 3):
        q.update(0, chunk)
    span = data.max() - data.min()
    assert abs(q.quantile(p)[0] - np.quantile(data, p)) <= 4 * span / 256 + 1e-9 * (1 + abs(data).max())
