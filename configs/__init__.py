"""Experiment configs (ml_collections `get_config()` files); see configs/default.py."""
