"""Amodal segmentation methods behind one interface and one registry."""
