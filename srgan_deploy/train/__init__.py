"""Training of the SRResNet / SRGAN generator (the paper's two-phase recipe)."""
