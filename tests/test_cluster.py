"""Spherical k-means and the K_c rule."""

import pytest
import torch

from thce.cluster import _by_cluster_then_similarity, _Cosines, cluster_per_class, clusters_per_class, spherical_kmeans
from thce.errors import DataError


def _blobs(centres: torch.Tensor, per_centre: list[int], spread: float, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    points = [c + spread * torch.randn(n, len(c), generator=generator) for c, n in zip(centres, per_centre)]
    return torch.nn.functional.normalize(torch.cat(points), dim=1)


def test_k_rule():
    assert clusters_per_class([20, 20, 10, 260]).tolist() == [2, 2, 1, 26]
    assert clusters_per_class([7, 15, 29]).tolist() == [1, 2, 4]  # floor
    with pytest.raises(DataError, match="at least one"):
        clusters_per_class([5, 0])


@pytest.mark.parametrize("balanced", [False, True])
def test_recovers_known_centres_on_the_sphere(balanced):
    centres = torch.nn.functional.normalize(torch.eye(8)[:4] + 0.05, dim=1)
    x = _blobs(centres, [30, 30, 30, 30], spread=0.08)
    centroids, assignment = spherical_kmeans(x, 4, seed=3, balanced=balanced)
    assert torch.allclose(centroids.norm(dim=1), torch.ones(4), atol=1e-5)
    similarity = centroids @ centres.t()
    # each true centre is matched by exactly one centroid with cosine > 0.99
    assert sorted(similarity.argmax(dim=1).tolist()) == [0, 1, 2, 3]
    assert similarity.max(dim=1).values.min() > 0.99
    assert torch.bincount(assignment).tolist() == [30, 30, 30, 30]


def test_balanced_caps_cluster_sizes_and_none_is_empty():
    centres = torch.nn.functional.normalize(torch.eye(6)[:3], dim=1)
    x = _blobs(centres, [80, 10, 10], spread=0.2, seed=2)
    _, plain = spherical_kmeans(x, 4, seed=0)
    _, balanced = spherical_kmeans(x, 4, seed=0, balanced=True)
    assert torch.bincount(plain, minlength=4).min() >= 1
    assert torch.bincount(balanced, minlength=4).max() <= 25  # ceil(100 / 4)
    _, singletons = spherical_kmeans(x[:5], 5, seed=0)
    assert sorted(singletons.tolist()) == [0, 1, 2, 3, 4]


def test_deterministic_for_a_seed():
    x = _blobs(torch.eye(5), [20] * 5, spread=0.5)
    a = spherical_kmeans(x, 3, seed=7)
    b = spherical_kmeans(x, 3, seed=7)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])


def test_cluster_per_class_layout():
    generator = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(70, 4, generator=generator), dim=1)
    classes = torch.tensor([0] * 10 + [1] * 20 + [2] * 40)
    result = cluster_per_class(x, classes, num_classes=3, seed=0, balanced=True)
    assert result.clusters_per_class.tolist() == [1, 2, 4]
    assert result.cluster_class.tolist() == [0, 1, 1, 2, 2, 2, 2]
    assert torch.equal(result.cluster_class[result.assignment], classes)  # clusters hold a single class
    assert result.sizes().tolist() == [10, 10, 10, 10, 10, 10, 10]


def test_bad_input():
    with pytest.raises(ValueError, match="k must be"):
        spherical_kmeans(torch.randn(3, 2), 4)


def test_cap_on_clusters_per_class():
    assert clusters_per_class([20, 20, 10, 260], max_per_class=4).tolist() == [2, 2, 1, 4]
    assert clusters_per_class([20, 20, 10, 260], max_per_class=0).tolist() == [2, 2, 1, 26]  # 0: the paper's rule
    with pytest.raises(ValueError, match="max_per_class"):
        clusters_per_class([20, 10], max_per_class=-1)


def test_capped_clusters_stay_roughly_equal():
    generator = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(70, 4, generator=generator), dim=1)
    classes = torch.tensor([0] * 10 + [1] * 20 + [2] * 40)
    result = cluster_per_class(x, classes, num_classes=3, seed=0, balanced=True, max_clusters_per_class=2)
    assert result.clusters_per_class.tolist() == [1, 2, 2]
    assert torch.equal(result.cluster_class[result.assignment], classes)
    assert result.sizes().tolist() == [10, 10, 10, 20, 20]  # the capped class: clusters of ceil(40 / 2)


def test_one_sort_orders_proposers_by_cluster_then_decreasing_similarity():
    """The int64-key sort equals sorting by similarity (descending, stable) and then stably by cluster, with ties,
    both signs, -0.0 beside 0.0 and -inf (a full cluster's masked similarity)."""
    generator = torch.Generator().manual_seed(0)
    best = torch.rand(5000, generator=generator) * 2 - 1
    best[::7] = best[1::7][: len(best[::7])]  # ties inside and across clusters
    best[:6] = torch.tensor([-0.0, 0.0, -0.0, float("-inf"), 1.0, -1.0])
    choice = torch.randint(13, (5000,), generator=generator)
    choice[:6] = 0
    order = torch.argsort(best, descending=True, stable=True)
    expected = order[torch.argsort(choice[order], stable=True)]
    assert torch.equal(_by_cluster_then_similarity(choice, best), expected)


@pytest.mark.parametrize("k", [1, 16, 19])
def test_cosines_buffer_gives_the_product_at_every_call(k):
    """Padded to a multiple of 16 and written into one buffer: each call returns x @ centroids.t(), (N, k)."""
    generator = torch.Generator().manual_seed(k)
    x = torch.nn.functional.normalize(torch.randn(301, 8, generator=generator), dim=1)
    cosines = _Cosines(x, k)
    for _ in range(2):  # the second call overwrites the first's buffer with new centroids' values
        centroids = torch.nn.functional.normalize(torch.randn(k, 8, generator=generator), dim=1)
        result = cosines(centroids)
        assert result.shape == (301, k)
        torch.testing.assert_close(result, x @ centroids.t(), rtol=1e-6, atol=1e-6)
