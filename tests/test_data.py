"""The packaged real routing data (sona.data)."""

import numpy as np
import pytest

from sona.data import EMBEDDINGS, load_routerbench


@pytest.mark.parametrize("name", sorted(EMBEDDINGS))
def test_routerbench_shapes_and_values(name):
    data = load_routerbench(name)
    n, K = 3150, 11
    assert data.X.shape == (n, EMBEDDINGS[name][1]) and data.X.dtype == np.float32
    assert data.quality.shape == data.cost.shape == (n, K)
    assert np.allclose(np.linalg.norm(data.X, axis=1), 1.0, atol=2e-3)
    assert set(np.unique(data.quality)) <= {0.0, 1.0}
    assert (data.cost > 0).all()
    assert data.is_train.sum() == 2205
    assert data.task_names == ("arc_challenge", "mbpp", "winogrande")
    # DATA.md's means over all queries
    gpt4 = data.routes.index("gpt-4-1106-preview")
    assert data.quality[:, gpt4].mean() == pytest.approx(0.879, abs=5e-4)
    assert data.quality.max(axis=1).mean() == pytest.approx(0.976, abs=5e-4)


def test_subset_and_without_routes():
    data = load_routerbench()
    test = data.subset(~data.is_train)
    assert test.n_queries == 945 and not test.is_train.any()
    small = data.without_routes(["gpt-4-1106-preview"])
    assert len(small.routes) == 10 and "gpt-4-1106-preview" not in small.routes
    assert small.quality.shape == (3150, 10)
    with pytest.raises(ValueError, match="unknown routes"):
        data.without_routes(["gpt-5"])
    with pytest.raises(ValueError, match="at least 2 routes"):
        data.without_routes(list(data.routes[1:]))


def test_unknown_embedding():
    with pytest.raises(ValueError, match="embedding must be one of"):
        load_routerbench("bert")
