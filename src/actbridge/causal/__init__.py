"""Causal profiles: sender ablation and patching, receiver patching and self-patching."""
