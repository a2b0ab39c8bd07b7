"""Sweep files shipped with lbm (the seed's examples) and their conditional config files."""
