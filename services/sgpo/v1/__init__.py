"""Generated gRPC stubs for protos/sgpo/v1 (scripts/gen_protos.py). Do not edit."""
