"""Build step: the repository's zoo/ (registry and shipped weights) becomes package data, amodalkit/_zoo/.

Everything else is declared in pyproject.toml. zoo/ at the repository top stays the source of truth:
a wheel (``pip install .``, ``pip wheel .``, ``python -m build``) gets a copy of its files in
``amodalkit/_zoo/``, the sdist carries zoo/ itself, and an editable install copies nothing, so
``amodalkit.zoo`` keeps reading the clone's zoo/.
"""

from __future__ import annotations

import os

from setuptools import setup
from setuptools.command.build_py import build_py

ZOO_SOURCE = "zoo"
ZOO_PACKAGE_DIR = ("amodalkit", "_zoo")


def zoo_files() -> list[str]:
    """Every plain, non-hidden file of zoo/, relative to the project root (the build's working directory)."""
    names = sorted(n for n in os.listdir(ZOO_SOURCE) if not n.startswith("."))
    return [f"{ZOO_SOURCE}/{n}" for n in names if os.path.isfile(os.path.join(ZOO_SOURCE, n))]


class BuildPyWithZoo(build_py):
    """``build_py`` that also copies zoo/* into the built package as amodalkit/_zoo/*."""

    def zoo_mapping(self) -> dict[str, str]:
        """Built file -> source file for the zoo's files."""
        target = os.path.join(self.build_lib, *ZOO_PACKAGE_DIR)
        return {os.path.join(target, os.path.basename(f)): f for f in zoo_files()}

    def run(self) -> None:
        """Build the package, then copy the zoo beside its modules (nothing in editable mode)."""
        super().run()
        if self.editable_mode:
            return
        for built, source in self.zoo_mapping().items():
            self.mkpath(os.path.dirname(built))
            self.copy_file(source, built)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        """The package's outputs plus the copied zoo files (editable mode lists its own mapping)."""
        outputs = super().get_outputs(include_bytecode)
        return outputs if self.editable_mode else [*outputs, *self.zoo_mapping()]

    def get_output_mapping(self) -> dict[str, str]:
        """Built file -> source file; an editable install links no zoo (it reads the clone's zoo/)."""
        mapping = super().get_output_mapping()
        return mapping if self.editable_mode else {**mapping, **self.zoo_mapping()}

    def get_source_files(self) -> list[str]:
        """The package's sources plus zoo/*, so the sdist carries the zoo and builds the same wheel."""
        return [*super().get_source_files(), *zoo_files()]


setup(cmdclass={"build_py": BuildPyWithZoo})
