"""Runnable end-to-end recipes (seeds/000) on a running fleet, one module per recipe."""
