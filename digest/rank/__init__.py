"""Rank: match papers to interests and pick each subscriber's best, explained."""
