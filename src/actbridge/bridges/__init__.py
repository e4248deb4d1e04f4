"""Bridges: maps from a sender layer's states to a receiver layer's, fitted offline or through the receiver."""
