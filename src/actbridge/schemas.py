"""Schemas of the per-example injection tables and the causal effects (no torch: the statistics jobs read them too)."""

from __future__ import annotations

import pyarrow as pa

# one row per example x role x condition x alpha, as scored by :func:`actbridge.injection.jobs.run_injection`
# The condition every other is paired with, as the tables name it (injection.conditions must include it).
BASELINE = "none"

RESULT_SCHEMA = pa.schema([
    ("example_id", pa.string()), ("mode", pa.string()), ("hops", pa.int8()), ("role", pa.string()),
    ("condition", pa.string()), ("alpha", pa.float64()), ("exact_match", pa.bool_()),
    ("gold_logprob", pa.float64()), ("gold_rank", pa.int16()), ("n_candidates", pa.int16()),
    # the first-answer-token metric (CandidateScores.first_token_top): a channel that delivers only a
    # multi-token name's first token is invisible to exact match
    ("first_token_top", pa.bool_()), ("first_token_logprob", pa.float64()),
    ("h_norm", pa.float64()), ("b_norm", pa.float64()), ("cos_hb", pa.float64()), ("perturbation", pa.float64()),
])

# an injection job's file: the rows above tagged with the bridge that produced them
JOB_SCHEMA = pa.schema([("pair", pa.string()), ("sender_layer", pa.int16()), ("receiver_layer", pa.int16()),
                        ("method", pa.string()), ("seed", pa.int32()), *RESULT_SCHEMA])

# Causal effects (actbridge.causal.profiles): Δ of an intervention against the clean run, per context mode, layer, role
# and hop subset.
EFFECT_SCHEMA = pa.schema([
    ("mode", pa.string()), ("layer", pa.int16()), ("role", pa.string()), ("hops", pa.string()), ("condition", pa.string()),
    ("metric", pa.string()), ("n", pa.int64()), ("clean_value", pa.float64()), ("value", pa.float64()),
    ("delta", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()), ("ci_method", pa.string()),
    ("test", pa.string()), ("p_value", pa.float64()), ("p_holm", pa.float64()),
])
