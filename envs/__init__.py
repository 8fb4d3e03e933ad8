"""Env specs, one YAML per registered id nas_rl/<file name>; shipped as nas_rl.env_specs."""
