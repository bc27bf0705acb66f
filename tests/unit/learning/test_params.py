import json

import numpy as np
import pytest
import torch

from fedsilo.jobs import ModelSpec
from fedsilo.learning import (
    TensorEntry,
    build_model,
    flatten,
    load_flat,
    manifest,
    manifest_from_json,
    manifest_to_json,
    state_dict_from_flat,
)

MLP = ModelSpec(name="mlp", hidden=[8, 4], dropout=0.2)


def test_manifest_lists_float_tensors_in_state_dict_order():
    model = build_model(MLP, in_features=13)

    entries = manifest(model)

    assert entries == [
        TensorEntry("0.weight", (8, 13)),
        TensorEntry("0.bias", (8,)),
        TensorEntry("3.weight", (4, 8)),
        TensorEntry("3.bias", (4,)),
        TensorEntry("6.weight", (1, 4)),
        TensorEntry("6.bias", (1,)),
    ]


def test_manifest_survives_json():
    entries = manifest(build_model(MLP, in_features=13))

    text = json.dumps(manifest_to_json(entries))

    assert json.loads(text)[0] == {"name": "0.weight", "shape": [8, 13]}
    assert manifest_from_json(json.loads(text)) == entries


def test_flatten_is_little_endian_float32_in_manifest_order():
    model = build_model(ModelSpec(), in_features=3)

    vector = flatten(model)

    assert vector.dtype == np.dtype("<f4")
    expected = np.concatenate(
        [model.state_dict()["0.weight"].numpy().ravel(), model.state_dict()["0.bias"].numpy()]
    )
    assert np.array_equal(vector, expected)


def test_load_flat_round_trips_into_another_model():
    source = build_model(MLP, in_features=13, seed=1)
    target = build_model(MLP, in_features=13, seed=2)
    assert not np.array_equal(flatten(source), flatten(target))

    load_flat(target, flatten(source))

    assert np.array_equal(flatten(target), flatten(source))
    for name, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], tensor)


def test_load_flat_accepts_a_big_endian_vector():
    source = build_model(ModelSpec(), in_features=5, seed=1)
    target = build_model(ModelSpec(), in_features=5, seed=2)

    load_flat(target, flatten(source).astype(">f4"))

    assert np.array_equal(flatten(target), flatten(source))


def test_a_vector_of_the_wrong_size_is_refused_with_both_sizes():
    model = build_model(ModelSpec(), in_features=13)

    with pytest.raises(ValueError, match=r"holds 10 values.*expects a flat vector of 14"):
        load_flat(model, np.zeros(10, dtype=np.float32))


def test_state_dict_from_flat_loads_into_a_fresh_model():
    trained = build_model(MLP, in_features=13, seed=5)
    entries = manifest_from_json(json.loads(json.dumps(manifest_to_json(manifest(trained)))))

    state = state_dict_from_flat(entries, flatten(trained))
    fresh = build_model(MLP, in_features=13, seed=9)
    fresh.load_state_dict(state)

    inputs = torch.randn(6, 13)
    trained.eval()
    fresh.eval()
    assert torch.equal(fresh(inputs), trained(inputs))


def test_the_same_seed_builds_the_same_model_without_touching_the_global_generator():
    before = torch.get_rng_state()

    first = build_model(MLP, in_features=13, seed=4)
    second = build_model(MLP, in_features=13, seed=4)
    other = build_model(MLP, in_features=13, seed=5)

    assert torch.equal(torch.get_rng_state(), before)
    assert np.array_equal(flatten(first), flatten(second))
    assert not np.array_equal(flatten(first), flatten(other))


def test_logistic_regression_is_one_linear_layer():
    model = build_model(ModelSpec(), in_features=13, num_outputs=3)

    assert manifest(model) == [TensorEntry("0.weight", (3, 13)), TensorEntry("0.bias", (3,))]
