"""`python -m compressor` runs the command-line interface."""

from compressor.cli import main

main()
