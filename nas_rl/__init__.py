"""nas-rl: hardware-aware neural architecture search by reinforcement learning, as a Gymnasium env."""

from nas_rl.envs.registry import register_all as _register_all

__version__ = "0.1.0"

_register_all()
