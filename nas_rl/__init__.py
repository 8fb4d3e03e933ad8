"""nas-rl: hardware-aware neural architecture search by reinforcement learning, as a Gymnasium env."""

import os

# TensorFlow (TFLite conversion) and the libraries that import it print C++ info logs on import; keep
# the terminal for nas-rl's own output unless the user asked for them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# TensorFlow only builds and converts models here (LiteRT runs them), so its oneDNN kernels buy nothing, and
# their notice is printed even at log level 3.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from nas_rl.envs.registry import register_all as _register_all

__version__ = "0.1.0"

_register_all()
