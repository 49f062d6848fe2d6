"""The ``hes`` commands, one module each; ``cli.py`` assembles them into one typer app."""
