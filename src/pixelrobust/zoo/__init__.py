"""Architectures of public checkpoints that no package we depend on provides, importable as entry points
(``arch: python:pixelrobust.zoo.<module>:<function>``; see config/README.md, "Your own model")."""
