"""Ingest: fetch listing sources, read dumps, and record which papers are new."""
