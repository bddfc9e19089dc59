"""conceptlearn: few-shot concept learning with a BPL-style generative model, and its comparators."""

__version__ = "0.1.0"
