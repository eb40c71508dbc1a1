"""Placeholder: this family's models are being written."""
