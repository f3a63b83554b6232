"""metarl: the shared harness of the meta-RL benchmark suite (envs, sampling, evaluation, runs, CLI)."""

__version__ = "0.1.0"
