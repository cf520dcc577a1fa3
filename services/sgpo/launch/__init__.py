"""Local runs of the whole topology: every service as a process on loopback (`sgpo train`, `sgpo record`)."""
