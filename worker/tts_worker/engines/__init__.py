"""Engine plugins, found by name (see registry.py)."""
