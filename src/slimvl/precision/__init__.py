"""Adaptive precision: int4 format, sensitivity, plan, runtime controller."""
