"""SGPO: Stepwise Guided Policy Optimization as a set of services (see docs/design.md)."""

import os as _os

# gRPC's fork handlers off (unless the user set them): with them on, a process that forks beside busy gRPC
# channels gets the poller thread restarted in the child, which then aborts ("epoll_wait error: Bad file
# descriptor", exit -6) before it execs: the local launcher's services died so while starting (in CI, and 8 of
# 300 spawns in tests/integration/test_launcher_spawn.py; 0 of 300 with this). No process of ours uses gRPC
# after a fork without exec, which is all the handlers are for. grpc reads it when it first initialises, so it
# is set here, where every entry point (the CLI, torchrun's ranks, tests) imports sgpo before making a channel.
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

__version__ = "0.1.0"
