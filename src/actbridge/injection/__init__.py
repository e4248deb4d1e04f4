"""Injection: conditions as edits of the receiver's state, the KV-cached engine, injection jobs."""
