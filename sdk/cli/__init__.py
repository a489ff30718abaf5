"""The ``edgevit`` command line: :mod:`.app` (the Typer app and what commands share), one
module per command group (:mod:`.export`, :mod:`.inspect`, :mod:`.apps`, :mod:`.edvit`) and
:mod:`.main` (the entry point)."""
