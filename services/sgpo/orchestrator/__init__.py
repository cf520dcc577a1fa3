"""Orchestrator: streams prompts, calls generator, verifier and judge, enqueues scored groups."""
