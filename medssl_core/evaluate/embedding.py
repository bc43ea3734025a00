"""2-D embeddings of a model's test features (t-SNE, or UMAP with the optional extra) and how well they separate
the findings: the silhouette score the Gravity-2010 study reported (3Models.ipynb: StandardScaler, UMAP with 15
neighbours, min_dist 0.1, random_state 42; categories 'No Finding', one finding by name, or 'Multiple')."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from medssl_core.common.errors import ConfigError
from medssl_core.data.labels import MULTI_LABEL


def categories(labels: np.ndarray, task: str) -> np.ndarray:
    """One category per image: its class; multi-label: 0 no finding, 1 + j the single finding j, L + 1 several
    (a missing label counts as absent)."""
    if task != MULTI_LABEL:
        return labels.astype(np.int64)
    positive = labels == 1
    count = positive.sum(axis=1)
    return np.where(count == 0, 0, np.where(count == 1, 1 + positive.argmax(axis=1), labels.shape[1] + 1))


def embed_2d(features: np.ndarray, method: str, seed: int = 42) -> np.ndarray:
    """(N, 2) embedding of standardised ``features``."""
    from sklearn.preprocessing import StandardScaler

    x = StandardScaler().fit_transform(features.astype(np.float64))
    # neither fit reports progress: a terminal shows what runs once it has taken a few seconds
    with tqdm(total=1, desc=f"{method} of {len(x)} points", leave=False, delay=5, disable=None) as bar:
        xy = _fit(x, method, seed)
        bar.update()
    return xy


def _fit(x: np.ndarray, method: str, seed: int) -> np.ndarray:
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(2, random_state=seed, init="pca", perplexity=min(30.0, max(2.0, (len(x) - 1) / 3))
                    ).fit_transform(x)
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise ConfigError("protocol.embedding 'umap' needs umap-learn: pip install 'medssl[umap]' (about 170 MB "
                              "with numba), or use 'tsne'.") from None
        return umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, len(x) - 1), min_dist=0.1
                         ).fit_transform(x)
    raise ConfigError(f"unknown embedding {method!r}; use tsne or umap")


def silhouette(xy: np.ndarray, cats: np.ndarray) -> float:
    """sklearn's silhouette score of the categories in the embedding; NaN where it is undefined (one category,
    or as many categories as points)."""
    from sklearn.metrics import silhouette_score

    k = len(np.unique(cats))
    return float(silhouette_score(xy, cats)) if 2 <= k < len(cats) else float("nan")
