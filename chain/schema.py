"""State key layouts: the account/job/dataset map that the state root commits to.

=============  =======================  ==========================
prefix         key                      value
=============  =======================  ==========================
``a``          ``a || address(20)``     :class:`chain.state.Account`
``j``          ``j || job_id(32)``      :class:`chain.state.JobRecord`
``d``          ``d || dataset_id(32)``  :class:`chain.state.DatasetRecord`
``p``          ``p || part_id(32)``     :class:`chain.state.DatasetRecord` of a dataset part (no name)
=============  =======================  ==========================

These keys are consensus (the state root is computed over them). How a node lays them out on
disk, with its blocks and indexes, is :mod:`store.schema`.
"""

from __future__ import annotations

STATE_ACCOUNT = b"a"
STATE_JOB = b"j"
STATE_DATASET = b"d"
STATE_DATASET_PART = b"p"


def account_key(address: bytes) -> bytes:
    return STATE_ACCOUNT + address


def job_key(job_id: bytes) -> bytes:
    return STATE_JOB + job_id


def dataset_key(dataset_id: bytes) -> bytes:
    return STATE_DATASET + dataset_id


def dataset_part_key(part_id: bytes) -> bytes:
    return STATE_DATASET_PART + part_id
