"""Scoring predictions: the metrics, evaluation over shards, COCO export and shard statistics."""
