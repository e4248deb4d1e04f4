"""Where and how fast a job runs: the config's ``device``, ``dtype`` and ``threads`` made torch's. They change no
result, so the model rule's two paths and every model-running job share them without sharing a fingerprint."""

from __future__ import annotations

import torch

from actbridge.models.preflight import ModelUnavailableError, device_problem


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is an error naming ``device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = device_problem(device)
    if problem is not None:
        raise ModelUnavailableError(problem)
    return torch.device(device)


def resolve_dtype(dtype: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]


def configure_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)
