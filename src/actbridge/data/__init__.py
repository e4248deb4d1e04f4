"""The multi-hop dataset: fictional worlds, k-hop questions, splits, and their statistics."""
