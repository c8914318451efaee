"""Feeds: render RSS and Atom, and publish the global and private feeds."""
