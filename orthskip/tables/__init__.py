"""The paper's tables, one module per table; ``render`` writes any of them as Markdown or
LaTeX, ``formats`` holds the number formats they share and ``findings`` the generated
findings.md.

Each table module has a ``*_frame`` function (the numbers, from the aggregated result
DataFrames) and a ``*_table`` function (those numbers as a :class:`render.Table` of
strings). Nothing here reads a file: the table stage (:mod:`orthskip.stages.tables`)
reads the Parquet files, names the tables and writes their outputs.
"""
