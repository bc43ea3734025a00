"""Datasets: registry, loading (MedMNIST and original sources), downloads, splits."""

from medssl_core.data.dataset import ArrayDataset, is_available, load_dataset
from medssl_core.data.registry import REGISTRY, DatasetInfo, get_dataset

__all__ = ["REGISTRY", "ArrayDataset", "DatasetInfo", "get_dataset", "is_available", "load_dataset"]
