"""Experiments: the only layer that writes files or draws plots. The Hydra apps in scripts/ are thin mains over these."""
