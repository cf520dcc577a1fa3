"""The generator service: samples completions from the current policy (hf or vllm engine) and takes new weights.

`Engine` is the backend protocol (`sgpo.generator.engine`), `HFEngine` the transformers backend, the gRPC
servicer and the OpenAI-compatible HTTP app live in `server` and `openai_api`.
"""
