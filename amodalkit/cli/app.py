"""The ``amodalkit`` command group and its error boundary (one line on stderr, exit code 2)."""

from __future__ import annotations

from pathlib import Path

import click

from amodalkit.errors import AmodalkitError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

#: the Dask cluster option of every bulk command (amodalkit.execution)
scheduler_option = click.option(
    "--scheduler", default=None,
    help="Dask scheduler (tcp://HOST:8786; default $AMODALKIT_SCHEDULER): one task per shard "
         "(pip install 'dask[distributed]'; workers must see the same paths).")


def _hold(folder: Path) -> None:
    """Check and lock output `folder` for the rest of the command; clean its dead runs' temporary files."""
    from amodalkit.io.atomic import output_lock, remove_stale_temps
    from amodalkit.io.paths import check_writable

    check_writable(folder, "output folder", folder=True)
    click.get_current_context().with_resource(output_lock(folder))
    remove_stale_temps(folder)


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="amodalkit")
def cli() -> None:
    """amodalkit: amodal video object segmentation datasets, preprocessing and models."""


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning user errors into one line on stderr and exit code 2."""
    try:
        rv = cli.main(args=argv, prog_name="amodalkit", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except AmodalkitError as exc:
        click.echo(f"error: {exc}", err=True)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
    except PermissionError as exc:
        click.echo(f"error: {exc.filename or 'a file'}: permission denied", err=True)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"error: {where}{exc.strerror or exc}".splitlines()[0], err=True)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return 2

