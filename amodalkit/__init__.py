"""amodalkit: amodal video object segmentation datasets, preprocessing and models (SaVos)."""

from amodalkit.errors import AmodalkitError
from amodalkit.shards import ShardReader, Video, open_shard, write_shard

__all__ = ["AmodalkitError", "ShardReader", "Video", "__version__", "open_shard", "write_shard"]
__version__ = "0.1.0"
