"""The analysis stack: one module per stage, with the networks beside them.

Importing this package does not import torch; the network modules do.
"""
