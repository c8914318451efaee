"""Jinja templates and the commented default settings file, shipped as package data."""
