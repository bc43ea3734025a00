"""2-D embeddings and their silhouettes (Gravity-2010's 3Models.ipynb): categories by finding, t-SNE, UMAP only
with its extra, and a silhouette that tells separated findings from mixed ones."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from medssl_core.common.errors import ConfigError
from medssl_core.evaluate.embedding import categories, embed_2d, silhouette


def test_categories_are_no_finding_one_finding_or_several():
    labels = np.array([[0, 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 1], [-1, 0, 0], [-1, 1, 0]])
    assert categories(labels, "multi-label").tolist() == [0, 2, 4, 3, 0, 2]  # missing counts as absent
    assert categories(np.array([2, 0, 1]), "multi-class").tolist() == [2, 0, 1]


def test_silhouette_of_a_tsne_separates_clusters_from_noise():
    rng = np.random.default_rng(0)
    cats = np.repeat([0, 1, 2], 40)
    clustered = rng.normal(0, 1, (120, 32)) + rng.normal(0, 3, (3, 32))[cats]  # signal in every (scaled) feature
    mixed = rng.normal(0, 1, (120, 32))
    high, low = (silhouette(embed_2d(x, "tsne"), cats) for x in (clustered, mixed))
    assert high > 0.5 and abs(low) < 0.1
    assert np.isnan(silhouette(np.zeros((5, 2)), np.zeros(5, dtype=int)))  # one category: undefined


@pytest.mark.skipif(importlib.util.find_spec("umap") is not None, reason="umap-learn is installed")
def test_umap_without_its_extra_says_how_to_get_it():
    with pytest.raises(ConfigError, match=r"medssl\[umap\]"):
        embed_2d(np.zeros((10, 4)), "umap")
