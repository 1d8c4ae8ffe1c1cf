"""Experiments: the only layer that writes files or draws plots. The Hydra apps in scripts/ are thin mains over these.

Example (the fold factors every app accepts on the command line):
    >>> from foldconv.experiments.app import parse_r
    >>> parse_r("2x4"), parse_r(16)
    ((2, 4), 16)
"""
