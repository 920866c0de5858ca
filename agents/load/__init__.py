"""Load, chaos and benchmark runs: figures a user can reproduce with one command."""
