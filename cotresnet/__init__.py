"""cotresnet: infinitely deep and wide ResNets trained as Conditional Optimal Transport gradient flows."""
__version__ = "0.1.0"
