"""Diagnostics of training runs (`flowzoo analyze ...`): gradients.py is the alpha-Flow paper's gradient-conflict analysis."""
