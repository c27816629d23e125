"""Validation: the evidence a version needs before it goes live (docs/validation.md)."""
