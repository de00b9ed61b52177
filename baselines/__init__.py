"""Non-RL methods, one file each, each with a ``run(config, seed) -> result`` function on the
same learners the envs train; ``harness.registry`` maps (env family, method) to them.

Auxiliary learning (AuxLabel ids): ``stl``, ``human``, ``random``, ``maxl``, ``wa_maxl``.
Loss weighting (LossWeighting ids): ``stl``, ``ew``, ``si``, ``uw``, ``rlw``, ``dwa``,
``igbv1``, ``rlw_si`` and ``dwa_si`` (RLW's and DWA's weights on the log losses), each with a
torchjd aggregator via ``env_kwargs: {aggregator: upgrad}`` (IGB Algorithm 3); tabular data
under the hypernetwork paper's protocol: ``hypernet``, ``hard_sharing``, ``cross_stitch``,
``stl_naive``, ``stl_task_info`` and ``stl`` with ``method_kwargs: {protocol: tabular}``.
Task grouping (TaskGrouping ids): ``etap``, ``tag``, ``random``, ``optimal``.
"""
