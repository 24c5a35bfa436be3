"""The trainers: one cell (``solo``), a pack's members as one vectorised computation
(``stacked``), their shared state and rules (``runstate``), logs (``runlog``) and the
choice of device (``devices``)."""
