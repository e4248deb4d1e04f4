"""Hidden-state extraction: token roles, layers to extract and pair, Parquet shards."""
