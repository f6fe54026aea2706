"""Dataset generators and readers that write or read amodalkit shards."""
