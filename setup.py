"""Builds the optional C module ``poolmon._hot`` (the shims' compiled fast path).

Everything else about the package is declared in pyproject.toml. The extension is optional: a
machine without a C compiler or Python's headers still installs poolmon, which then runs its
pure-Python implementation (``poolmon.core.compiled`` explains the switch).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "poolmon._hot",
            ["poolmon/_hot.c"],
            optional=True,
            extra_compile_args=[
                "-O2",
                "-Wall",
                "-Wextra",
                "-Wno-unused-parameter",
                "-Wno-missing-field-initializers",
            ],
        )
    ]
)
