"""Files on disk: the shard schema, atomic writes, checkpoints, flow files, images and safe paths."""
