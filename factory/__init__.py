"""factory: a Ray-based rejection-sampling data factory for dual-preference DPO data."""

__version__ = "0.1.0"
