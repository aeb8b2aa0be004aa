"""A griffe extension for the docs build: keras_clr's docstrings follow
Keras's and head their doctests `Example:`, which griffe's Google parser
reads as a note; this makes it the examples section (`Examples:`), so the
doctests render as code with their output."""

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
