"""zsdistill: distill a zero-shot NLI classifier into a fast student text classifier, without labels."""

__version__ = "0.1.0"
