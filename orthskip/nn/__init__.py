"""The building blocks of the networks: orthogonal maps (``orth``), skip connections
(``skips``), architectures (``models``) and optimizers (``optim``)."""
