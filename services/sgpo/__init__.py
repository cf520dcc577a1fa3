"""SGPO: Stepwise Guided Policy Optimization as a set of services (see DESIGN.md)."""

__version__ = "0.1.0"
