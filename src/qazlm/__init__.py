"""qazlm: raw text to a small Kazakh/Russian/English language model."""

__version__ = "0.1.0"
