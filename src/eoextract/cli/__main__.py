"""``python -m eoextract.cli``."""

from eoextract.cli import app

app(prog_name="eoextract")
