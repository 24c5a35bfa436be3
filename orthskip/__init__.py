"""orthskip: orthogonal skip connections in deep residual networks."""

__version__ = "0.1.0"
