"""Trainer service: consumes scored groups from Redis, steps the policy, checkpoints, publishes weights."""
