"""The ``amodalkit`` command: one small function per subcommand, logic lives in the modules."""

from amodalkit.cli import data_commands, model_commands, table_commands
from amodalkit.cli.app import cli, main

#: the modules whose import registers the subcommands on :data:`cli`
COMMAND_MODULES = (data_commands, model_commands, table_commands)

__all__ = ["cli", "main"]
