"""Build threatseer's native core.

Three things are built here:

* the CO-RE BPF object: every ``native/bpf/*.bpf.c`` is compiled with ``clang -target bpf``
  against a ``vmlinux.h`` generated from the running kernel's BTF, then the objects are linked
  into one ``native/threatseer.bpf.o`` with ``bpftool gen object`` (one ring buffer, shared maps);
* the Cython extension ``threatseer.native._bpf``, linked against the system libbpf;
* the hub's per-event loops (``threatseer.hub.engines._profile``, ...), Cython over plain Python
  objects: the hub's pipeline is one thread, and in Python the interpreter's overhead was most
  of their cost.

A missing tool names the Debian package that provides it, because that is what an operator
rolling this out needs to know.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
NATIVE = os.path.join(HERE, "native")
GEN = os.path.join(NATIVE, "gen")  # generated headers and intermediate objects
BTF = "/sys/kernel/btf/vmlinux"
APT_HINT = "apt-get install clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev pkg-config"


class BuildError(SystemExit):
    def __init__(self, msg: str) -> None:
        super().__init__(f"threatseer build: {msg}")


def need_tool(name: str, package: str) -> str:
    path = shutil.which(name) or (os.path.exists(f"/usr/sbin/{name}") and f"/usr/sbin/{name}")
    if not path:
        raise BuildError(f"'{name}' not found: install the Debian package '{package}' ({APT_HINT})")
    return path


def run(cmd: list[str]) -> None:
    print(" ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise BuildError(f"command failed ({proc.returncode}): {' '.join(cmd)}")


def arch_define() -> str:
    machine = os.uname().machine
    return {"x86_64": "x86", "aarch64": "arm64", "riscv64": "riscv", "s390x": "s390"}.get(
        machine, machine
    )


def build_bpf() -> None:
    """Compile and link the BPF programs; skip when nothing changed."""
    clang = need_tool("clang", "clang")
    bpftool = need_tool("bpftool", "bpftool")
    if not os.path.exists("/usr/include/bpf/bpf_helpers.h"):
        raise BuildError(f"libbpf headers not found: install 'libbpf-dev' ({APT_HINT})")
    if not os.path.exists(BTF):
        raise BuildError(f"{BTF} missing: the kernel must be built with CONFIG_DEBUG_INFO_BTF=y")
    os.makedirs(GEN, exist_ok=True)
    vmlinux = os.path.join(GEN, "vmlinux.h")
    if not os.path.exists(vmlinux):
        with open(vmlinux + ".tmp", "w") as out:
            proc = subprocess.run([bpftool, "btf", "dump", "file", BTF, "format", "c"], stdout=out)
        if proc.returncode != 0:
            raise BuildError("bpftool could not dump the kernel BTF")
        os.replace(vmlinux + ".tmp", vmlinux)
    sources = sorted(glob.glob(os.path.join(NATIVE, "bpf", "*.bpf.c")))
    headers = glob.glob(os.path.join(NATIVE, "bpf", "*.h")) + glob.glob(
        os.path.join(NATIVE, "include", "*.h")
    )
    target = os.path.join(NATIVE, "threatseer.bpf.o")
    newest = max(os.path.getmtime(p) for p in sources + headers + [__file__])
    if os.path.exists(target) and os.path.getmtime(target) >= newest:
        return
    objects = []
    for src in sources:
        obj = os.path.join(GEN, os.path.basename(src).replace(".bpf.c", ".bpf.o"))
        run([clang, "-g", "-O2", "-target", "bpf", f"-D__TARGET_ARCH_{arch_define()}",
             "-Wall", "-Werror", "-Wno-unused-function",
             "-I", GEN, "-I", os.path.join(NATIVE, "include"), "-I", os.path.join(NATIVE, "bpf"),
             "-c", src, "-o", obj])
        objects.append(obj)
    run([bpftool, "gen", "object", target, *objects])


class BuildNative(build_ext):
    def run(self) -> None:
        build_bpf()
        super().run()


class BuildPy(build_py):
    """Build the BPF object before package data is collected, so that a wheel built from a
    clean checkout ships native/threatseer.bpf.o; ship the default rule bundle (rules/default)
    as threatseer/hub/rules/default_bundle, where ``threatseer demo`` and the hub find it."""

    def run(self) -> None:
        build_bpf()
        super().run()
        target = os.path.join(self.build_lib, "threatseer", "hub", "rules", "default_bundle")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(os.path.join(HERE, "rules", "default"), target)


# The hub's per-event loops (batch handling, static engine, rule index, profile engine): Cython
# over plain Python objects, beside the hub modules they serve (module name -> source).
HUB_LOOPS = {
    "threatseer.hub._batch": "hub/_batch.pyx",
    "threatseer.hub.engines._static": "hub/engines/_static.pyx",
    "threatseer.hub.engines._profile": "hub/engines/_profile.pyx",
    "threatseer.hub.rules._rule_index": "hub/rules/_rule_index.pyx",
}


def extensions() -> list[Extension]:
    from Cython.Build import cythonize

    ext = Extension(
        "threatseer.native._bpf",
        sources=[os.path.join("native", "_bpf.pyx")],
        include_dirs=[os.path.join("native", "include")],
        libraries=["bpf", "elf", "z"],
        extra_compile_args=["-O2", "-Wno-unused-function"],
    )
    # The hub's hot loops: plain C over Python objects, no library to link.
    loops = [Extension(name, sources=[src], extra_compile_args=["-O2"])
             for name, src in HUB_LOOPS.items()]
    # include_path: _bpf.pyx cimports native/libbpf.pxd and native/checkrc.pxd by plain name
    return cythonize([ext, *loops], language_level=3, include_path=[os.path.join(HERE, "native")],
                     compiler_directives={"boundscheck": False})


# The import package is ``threatseer.*``; the source folders keep the project's layout.
PACKAGE_DIRS = {"threatseer.native": "native", "threatseer.common": "common",
                "threatseer.sensor": "sensor", "threatseer.hub": "hub", "threatseer.cli": "cli"}


def packages() -> list[str]:
    found = []
    for name, folder in PACKAGE_DIRS.items():
        for root, _dirs, files in os.walk(os.path.join(HERE, folder)):
            if "__init__.py" in files:
                rel = os.path.relpath(root, os.path.join(HERE, folder))
                found.append(name if rel == "." else name + "." + rel.replace(os.sep, "."))
    return sorted(found)


setup(
    packages=packages(),
    package_dir=PACKAGE_DIRS,
    package_data={"threatseer.native": ["threatseer.bpf.o", "*.pxd", "include/*.h"],
                  "threatseer.hub.console": ["static/*"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildNative, "build_py": BuildPy},
    zip_safe=False,
)
