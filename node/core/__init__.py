"""The node core: the parts behind :class:`node.chain_service.ChainService`, one job each.

=====================  ==========================================================================
module                 owns
=====================  ==========================================================================
``types``              the values the core hands out (outcomes, header entries, templates, views)
``verdicts``           remembered verdicts: which block hashes are known invalid, and why
``header_tree``        headers accepted ahead of their blocks, the best header, header context
``verify_pool``        the process pool that checks signatures and replays trajectories
``models``             the node's model store and job evaluation history (node indexes)
``templates``          mining: job choice, block templates, sealing a miner's result
``importer``           the block pipeline (stages 2–5), held future blocks, mempool upkeep
=====================  ==========================================================================

Every part runs on the facade's one writer thread; none of them is thread-safe on its own. Other
threads read the :class:`~node.core.types.ChainView` the facade publishes after each change.
"""
