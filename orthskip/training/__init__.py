"""Training: the engine (``stacked``: a pack of M ≥ 1 cells) and its nets (``handmlp``,
hand-batched mlps; ``Stacked`` in ``stacked``, vmap; ``single``, a pack of one), the
reference loop the tests hold it to (``reference``), what both share (``runstate``,
``outputs``, ``preempt``), logs (``runlog``) and the choice of device (``devices``)."""
