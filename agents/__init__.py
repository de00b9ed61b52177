"""RL agents for the mtl-envs environments (Stable-Baselines3): RL-AUX's PPO
(``ppo_auxlabel``), IGBv2's SAC (``sac_lossweighting``), PPO for group selection
(``ppo_grouping``), their feature extractors, the SB3 adapter for Gymnasium's vector envs and
a plain-loop custom agent. ``harness.registry`` maps methods to them.
"""
