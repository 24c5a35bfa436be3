"""The pipeline's config, from one source: option tables (``options``) beside the parts
they configure, the JSON schema generated from them (``schema``), loading, checking and
expanding into the cell grid (``grid``) and ``orthskip config show`` (``show``)."""
