"""Tensor operations shared by models and data readers, free of any file format."""
