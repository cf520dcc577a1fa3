"""SGPO: Stepwise Guided Policy Optimization as a set of services (see docs/design.md)."""

__version__ = "0.1.0"
