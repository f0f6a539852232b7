"""Checkpoint files as researchers have them: `formats` detects, reads and converts them; `loaders` builds a
model from one."""
