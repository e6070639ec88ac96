"""Useful work: exact integer training (model, engine, backends, datasets) and the lottery around it.

Nothing here imports the node: the package depends on numpy and torch only (plus the canonical
encoding and hashes of :mod:`chain`). docs/protocol.md Part III specifies the training arithmetic.
"""
