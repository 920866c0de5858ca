"""Importing this module registers every agent and route with the kernel."""
