"""Experiments that test claims of the source documents with the engine."""
