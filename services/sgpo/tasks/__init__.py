"""Datasets and the synthetic arithmetic task, and the tiny policy the project pretrains on it."""
