"""Service plumbing shared by every service shell: settings, the gRPC server, logs, proto conversion."""
