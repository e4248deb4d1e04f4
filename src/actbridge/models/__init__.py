"""Models: micro GPT-NeoX training, named models (hub id, directory, GGUF), tokenizers, answer scoring."""
