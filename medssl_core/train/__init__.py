"""Fitting: the pretraining loop, probes and fine-tuning, optimisers and schedules, throughput."""
