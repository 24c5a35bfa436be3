"""The pipeline's stages, one module per rule of the workflow and one entry function each:
``prepare``, ``train``, ``metrics``, ``approx``, ``aggregate``, ``figures``, ``tables``
(and findings), ``dvc_summary``. ``python -m orthskip COMMAND`` (``orthskip/cli.py``) runs
them with explicit paths."""
