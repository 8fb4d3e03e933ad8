"""Hydra config root, shipped inside the package as nas_rl.conf."""
