"""The local container runtime: the Docker Engine API on this host (engine.py)."""
