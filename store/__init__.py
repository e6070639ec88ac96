"""The node's storage layer: byte-keyed stores (:mod:`store.kv`), the chain database with its block
tree and indexes (:mod:`store.chaindb`) and every on-disk key layout (:mod:`store.schema`).

Pure chain code (:mod:`chain`, :mod:`consensus`, :mod:`pouw`) never imports this package.
"""
