"""The paper's figures, one module per kind of figure; ``style`` holds the shared look.

The figure stage (:mod:`orthskip.stages.figures`) names them and writes the files.
"""
