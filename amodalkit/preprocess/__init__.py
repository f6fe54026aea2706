"""Preprocessing stages that fill shards: optical flow, visible masks and tracks."""
