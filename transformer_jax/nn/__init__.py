"""Building blocks: attention (masks, KV cache), embeddings, feed-forward and layers."""
