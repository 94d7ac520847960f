"""Builds shmlease._shmlease with the repository's CMake project (see pyproject.toml).

The extension links libshmlease and the protocol library from this repository, so the build
runs CMake on the repository root (the folder above this one) and copies the built module into
the wheel. Environment: SHMLEASE_CMAKE_ARGS adds arguments to the CMake configure step.
"""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        if not (REPO / "CMakeLists.txt").is_file() or not (REPO / "client").is_dir():
            raise RuntimeError(f"{REPO} is not the shmlease repository: build from a checkout")
        build_dir = Path(self.build_temp).resolve() / "cmake"
        configure = [
            "cmake", "-S", str(REPO), "-B", str(build_dir),
            "-DCMAKE_BUILD_TYPE=Release",
            "-DSHMLEASE_BUILD_TESTS=OFF", "-DSHMLEASE_BUILD_BENCH=OFF",
            "-DSHMLEASE_BUILD_PYTHON=ON", f"-DSHMLEASE_PYTHON={sys.executable}",
            *shlex.split(os.environ.get("SHMLEASE_CMAKE_ARGS", "")),
        ]
        subprocess.run(configure, check=True)
        jobs = str(os.cpu_count() or 1)
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "shmlease_python",
                        "-j", jobs], check=True)
        built = list((build_dir / "python" / "shmlease").glob("_shmlease*.so"))
        if len(built) != 1:
            raise RuntimeError(f"expected one built _shmlease module, found {built}")
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built[0], target)


setup(
    ext_modules=[Extension("shmlease._shmlease", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
)
