"""Optical flow: backends (DIS, FlowNet2, ptlflow) and the stage that fills shards or writes flow files."""
