"""Test-time adapters and normalizer invariances: what each may change, and what it must not read."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.models.adapters import batchnorms
from bench.data.splits import load_split
from bench.run.evaluate import evaluate
from bench.core.registry import get_registry
from bench.data.scenarios import load_scenario

pytestmark = pytest.mark.filterwarnings("ignore:imagenet weights")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return get_registry().get("model", "unet_mnv2").build(in_channels=6).module.eval()


def _batches(n=3):
    g = torch.Generator().manual_seed(1)
    return [torch.rand(4, 6, 64, 64, generator=g) * 2 + 1 for _ in range(n)]  # unlike the init statistics


def _split(state):
    params = {k: v for k, v in state.items() if "running" not in k and "num_batches" not in k}
    stats = {k: v for k, v in state.items() if "running" in k or "num_batches" in k}
    return params, stats


def _bn_affine(model):
    names = set()
    for name, m in model.named_modules():
        if m in batchnorms(model):
            names |= {f"{name}.weight", f"{name}.bias"}
    return names


def test_adabn_changes_batchnorm_statistics_and_nothing_else(model):
    before = copy.deepcopy(model.state_dict())
    adapted = get_registry().get("adapter", "adabn").build().adapt(copy.deepcopy(model), _batches())
    after = adapted.state_dict()
    p0, s0 = _split(before)
    p1, s1 = _split(after)
    assert all(torch.equal(p0[k], p1[k]) for k in p0)
    changed = [k for k in s0 if "running" in k and not torch.equal(s0[k], s1[k])]
    assert len(changed) == sum("running" in k for k in s0)  # every running statistic moved
    assert all(torch.equal(s0[k], s1[k]) for k in s0 if "num_batches" in k)


def test_tent_changes_only_batchnorm_affine_parameters(model):
    before = copy.deepcopy(model.state_dict())
    adapted = get_registry().get("adapter", "tent").build().adapt(copy.deepcopy(model), _batches())
    after = adapted.state_dict()
    affine = _bn_affine(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= affine
    assert len(changed) > len(affine) // 2


@pytest.mark.parametrize("adapter", ["none", "adabn", "tent"])
def test_adapters_never_read_the_reference(adapter):
    scenario = load_scenario("samples_intra")
    train, test = load_split(scenario, "train"), load_split(scenario, "test")
    norm = get_registry().get("norm", "percentile").build().fit(train.samples())
    torch.manual_seed(0)
    model = get_registry().get("model", "unet_mnv2").build(in_channels=6).module
    space = scenario.eval_space()
    a = evaluate(copy.deepcopy(model), norm, test, space, 128, 4, adapter=get_registry().get("adapter", adapter).build())
    for scene in test.scenes:  # scramble the reference: predictions must not move
        scene.codes = np.random.default_rng(0).permutation(scene.codes.ravel()).reshape(scene.codes.shape)
    b = evaluate(copy.deepcopy(model), norm, test, space, 128, 4, adapter=get_registry().get("adapter", adapter).build())
    for sid in a.predictions:
        np.testing.assert_array_equal(a.predictions[sid], b.predictions[sid])
    assert a.metrics["adapter"]["protocol"] == ("none" if adapter == "none" else "per_scene")
    if adapter != "none":
        assert a.metrics["adapter"]["budget"]["images"] == 2  # the test region's two 128 px tiles


def test_per_test_set_protocol_adapts_once_on_every_test_tile():
    scenario = load_scenario("samples_cross")
    train, test = load_split(scenario, "train"), load_split(scenario, "test")
    norm = get_registry().get("norm", "percentile").build().fit(train.samples())
    model = get_registry().get("model", "unet_mnv2").build(in_channels=6).module
    adabn = get_registry().builder("adapter", "adabn").fn(protocol="per_test_set")
    ev = evaluate(model, norm, test, scenario.eval_space(), 128, 4, adapter=adabn)
    assert ev.metrics["adapter"] == {"protocol": "per_test_set", "budget": {"batches": 5, "images": 5}}  # one tile per scene
    from bench.core.errors import ConfigError

    with pytest.raises(ConfigError, match="protocol must be one of"):
        get_registry().builder("adapter", "tent").fn(protocol="sometimes")


images = st.builds(lambda seed: np.random.default_rng(seed).gamma(2.0, 0.1, (3, 32, 32)).astype(np.float64),
                   st.integers(0, 10_000))
gains = st.lists(st.floats(0.5, 2.0), min_size=3, max_size=3).map(lambda g: np.array(g)[:, None, None])
offsets = st.lists(st.floats(-0.2, 0.2), min_size=3, max_size=3).map(lambda o: np.array(o)[:, None, None])


@settings(max_examples=25, deadline=None)
@given(images, gains)
def test_percentile_scene_ignores_a_positive_per_band_gain(x, g):
    n = get_registry().get("norm", "percentile_scene").build()
    np.testing.assert_allclose(n.transform(x * g), n.transform(x), atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(images, gains, offsets)
def test_zscore_patch_ignores_gain_and_offset(x, g, o):
    n = get_registry().get("norm", "zscore_patch").build()
    np.testing.assert_allclose(n.transform(x * g + o), n.transform(x), atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(images, gains, offsets)
def test_percentile_fitted_on_training_data_does_change(x, g, o):
    from hypothesis import assume

    assume(np.abs(g - 1).max() > 0.05 or np.abs(o).max() > 0.02)
    n = get_registry().get("norm", "percentile").build().fit([(x, None)])
    assert not np.allclose(n.transform(x * g + o), n.transform(x), atol=1e-3)
