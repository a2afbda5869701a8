"""``python -m eoextract``: the command line, as the ``eoextract`` command."""

from eoextract.cli import app

app(prog_name="eoextract")
