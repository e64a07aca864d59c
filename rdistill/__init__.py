"""rdistill: distil LLM-based sequential recommenders into small, fast students on Ray."""

__version__ = "0.1.0"
