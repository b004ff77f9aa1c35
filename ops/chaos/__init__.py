"""`python -m ops.chaos`: a chaos campaign against a private fleet on loopback."""
