"""TrMRL: transformer meta-RL (Melo, ICML 2022) on the shared harness."""
