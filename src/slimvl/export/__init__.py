"""Checkpoints in other formats, for other engines."""
