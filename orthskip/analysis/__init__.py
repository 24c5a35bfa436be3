"""What is measured on trained networks: per-layer metrics (``metrics``), the orthogonal
approximation of identity blocks (``approx``) and the statistics over seeds (``stats``)."""
