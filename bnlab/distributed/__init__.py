"""Batch norm across processes (lecture 13): local CPU processes joined by ``torch.distributed`` (gloo).

Modules
-------
launcher   ``ProcessGroupPool``, ``run_distributed``: start N spawned processes in one gloo group, run an
           importable function on every rank, collect the results, always end the processes
sync_bn    ``SyncBatchNormFunction`` (hand-written backward), ``sync_batch_norm``, ``SyncBatchNorm``,
           ``convert_to_sync_batchnorm``: statistics over every rank's share of the batch
workers    the functions the lecture and its tests run on the ranks

Import from the submodules (``from bnlab.distributed.launcher import ProcessGroupPool``): this package module
imports nothing, so that a spawned process that needs one of them does not pay for the others.
"""
