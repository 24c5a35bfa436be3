"""The registry of dataset sources, kept at its old address: ``orthskip.data.spec`` holds
each source's entry (name, kind, task, options, builder, size, shape, outputs)."""

from orthskip.data.spec import SOURCES, Source, register_source

__all__ = ["SOURCES", "Source", "register_source"]
