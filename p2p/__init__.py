"""The peer-to-peer layer: WebSocket links, the message codec, gossip, headers-first sync, bans.

Entry point: :class:`p2p.service.P2PService`, started by the node over a
:class:`p2p.backend.ChainBackend`. Normative description: docs/protocol.md Part VII.
"""
