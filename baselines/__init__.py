"""Baselines on the shared harness: RL², MAML-TRPO, PEARL, VariBAD."""
