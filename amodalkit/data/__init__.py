"""Shards to tensors: torch Datasets of object clips (SaVos) and per-frame object crops."""
