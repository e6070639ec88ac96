"""Consensus rules over chain values: presets and parameters, difficulty (ASERT), the seal and the
block validation pipeline, fork choice and rewards; plus the transaction pool (policy, not consensus).
"""
