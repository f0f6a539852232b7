"""clipsvd: parameter-efficient adaptation of CLIP, and analysis of what changed.

Importing the package makes Hugging Face hub access offline unless the user set
HF_HUB_OFFLINE themselves: otherwise open_clip retries downloads for ~46 s before failing.
It must happen before open_clip is imported, hence here.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

__version__ = "0.1.0"
