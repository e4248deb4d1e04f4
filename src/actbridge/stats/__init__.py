"""Statistics: paired bootstrap intervals and tests, summaries, the verdict."""
