"""zoo: measure MobileViT against CNN+attention hybrids and vision transformers under matched recipes."""

__version__ = "0.1.0"
