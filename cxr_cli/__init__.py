"""Command-line plumbing shared by every binary: flags derived from config dataclasses, console."""
