"""Batched two-view augmentation on the device (``views``)."""
