"""Visible masks and tracks: file readers, the built-in tracker, linking scores and the shard builder."""
