"""flowzoo: few-step generative models as presets of one alpha-parameterised objective."""

__version__ = "0.1.0"
