"""actbridge: cross-model activation transfer, tested end to end."""

__version__ = "0.1.0"
