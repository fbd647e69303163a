"""Shipped study presets (demo, smoke, paper) as YAML; read by `study.config`."""
