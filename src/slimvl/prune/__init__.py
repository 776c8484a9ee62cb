"""Weight pruning: criteria (magnitude, Wanda, SparseGPT), row masks, the layer-by-layer schedule."""
