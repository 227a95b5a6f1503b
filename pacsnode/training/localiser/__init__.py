"""Training and evaluation of the spine localiser (stage 1); never imported by the node."""
