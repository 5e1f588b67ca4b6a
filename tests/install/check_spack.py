#!/usr/bin/env python3
"""The Spack recipe (packaging/spack/.../pyimport/package.py) against the project.

Spack is not installed here, so the recipe is imported over a small stub of
the Spack package API (the directives record what it declares, a fake spec
stands for a concretised one) and checked:

  declarations  every dependency is a package or virtual Spack's builtin
                repository has; every `when=`, `conflicts` and `requires`
                names declared variants and values; the platforms and
                targets the audit library is for are the ones admitted;
  cmake_args()  for several variant combinations: the values follow the
                variants, and the real project, configured with exactly
                Spack's standard arguments plus these (pkg-config seeing
                only the modules of the declared dependencies), uses every one of
                them (CMake names the -D variables a project never read)
                and ends with them in its cache, its install rules and
                the shim's compile flags;
  test_*        with --build, the recipe's stand-alone tests run against
                that build directory installed into a fresh prefix.

  check_spack.py <source dir> <recipe> [--build <build dir>]
"""
import argparse
import contextlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types

# What the recipe may depend on: packages and virtuals of Spack's builtin
# repository, checked in spack/spack-packages (commit 1e8cf05, 2026-07-01,
# repos/spack_repo/builtin/packages/<name>/package.py; `pkgconfig` is
# provided by pkgconf, `c`/`cxx` by the compilers). Spack has no criterion.
SPACK_PACKAGES = {"cmake", "gmake", "ninja", "pkgconf", "libunwind", "xxhash", "python", "mpich", "openmpi"}
SPACK_VIRTUALS = {"c", "cxx", "pkgconfig", "mpi", "unwind"}
DEPENDENCY_TYPES = {"build", "link", "run", "test"}
# The pkg-config module each library dependency installs.
PKG_CONFIG_MODULES = {"libunwind": "libunwind", "xxhash": "libxxhash"}

failures = []


def fail(message):
    failures.append(message)
    print(f"check_spack: FAIL: {message}", file=sys.stderr)


# ---------------------------------------------------------------- the stub


class Declared:
    """What the recipe's class body declared, in order."""

    def __init__(self):
        self.versions, self.variants, self.depends = [], {}, []
        self.conflicts, self.requires, self.when = [], [], []


declared = Declared()


def _condition(when):
    return " ".join([*declared.when, *([when] if when else [])])


class _AnyCombination:
    """any_combination_of(...): a multi-valued variant whose default, none,
    excludes the others."""

    def __init__(self, *values):
        self.values = ("none", *values)
        self.default = "none"
        self.multi = True


def any_combination_of(*values):
    return _AnyCombination(*values)


def version(name, **kwargs):
    declared.versions.append((str(name), kwargs))


def variant(name, default=None, description="", values=None, multi=None, validator=None, when=None, sticky=False):
    if isinstance(values, _AnyCombination):
        default, multi, values = values.default, True, values.values
    elif values is None:
        values = (True, False)
    if not description:
        fail(f"variant {name} has no description")
    declared.variants[name] = types.SimpleNamespace(
        name=name, default=default, values=tuple(values), multi=bool(multi), when=_condition(when)
    )


def depends_on(spec, when=None, type=("build", "link"), patches=None):
    types_ = (type,) if isinstance(type, str) else tuple(type)
    declared.depends.append(types.SimpleNamespace(spec=spec, when=_condition(when), type=types_))


def conflicts(spec, when=None, msg=None):
    declared.conflicts.append(types.SimpleNamespace(spec=spec, when=_condition(when), msg=msg))


def requires(*specs, policy="one_of", when=None, msg=None):
    if policy not in ("one_of", "any_of"):
        fail(f"requires{specs}: policy {policy!r}")
    declared.requires.append(types.SimpleNamespace(specs=specs, policy=policy, when=_condition(when), msg=msg))


@contextlib.contextmanager
def when(condition):
    declared.when.append(condition)
    try:
        yield
    finally:
        declared.when.pop()


def license(*args, **kwargs):
    pass


def maintainers(*names):
    pass


def run_after(*phases, when=None):
    return lambda function: function


def run_before(*phases, when=None):
    return lambda function: function


def join_path(*parts):
    return os.path.join(*(str(p) for p in parts))


class InstallError(Exception):
    pass


class SkipTest(Exception):
    pass


class ProcessError(Exception):
    pass


class Prefix(str):
    """Spack's prefix: attributes are subdirectories."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return Prefix(os.path.join(self, name))

    def join(self, name):
        return Prefix(os.path.join(self, name))


class Executable:
    """Spack's Executable, for what the recipe's tests use: output and error
    captured as str (or str.split) are returned together."""

    def __init__(self, path):
        self.path = str(path)

    def __call__(self, *args, output=None, error=None, env=None, extra_env=None, fail_on_error=True, input=None):
        environment = dict(os.environ if env is None else env)
        environment.update(extra_env or {})
        capture_out, capture_err = output in (str, str.split), error in (str, str.split)
        done = subprocess.run(
            [self.path, *(str(a) for a in args)],
            env=environment,
            text=True,
            stdout=subprocess.PIPE if capture_out else None,
            stderr=subprocess.PIPE if capture_err else None,
        )
        if fail_on_error and done.returncode != 0:
            raise ProcessError(f"{self.path} {' '.join(map(str, args))}: exit {done.returncode}")
        if capture_out or capture_err:
            return (done.stdout if capture_out else "") + (done.stderr if capture_err else "")
        return None


def which(*names, path=None, required=False):
    for name in names:
        name = str(name)
        found = name if os.sep in name else shutil.which(name, path=path)
        if found and os.access(found, os.X_OK) and os.path.isfile(found):
            return Executable(found)
    if required:
        raise ProcessError(f"{names[0]} is not an executable")
    return None


def _define(name, value):
    # As spack_repo.builtin.build_systems.cmake.define.
    if isinstance(value, bool):
        return f"-D{name}:BOOL={'ON' if value else 'OFF'}"
    if isinstance(value, (list, tuple)):
        value = ";".join(str(v) for v in value)
    return f"-D{name}:STRING={value}"


class CMakePackage:
    name = None

    def __init__(self, spec):
        self.spec = spec
        self.prefix = spec.prefix

    @staticmethod
    def define(name, value):
        return _define(name, value)

    def define_from_variant(self, name, variant=None):
        variant = variant or name.lower()
        if variant not in declared.variants:
            raise KeyError(f'"{variant}" is not a variant of "{self.name}"')
        if variant not in self.spec.variants:
            return ""
        value = self.spec.variants[variant].value
        if isinstance(value, (tuple, list)):
            value = sorted(value)
        return _define(name, value)


def install_stub():
    package = types.ModuleType("spack.package")
    for name in (
        "any_combination_of version variant depends_on conflicts requires when license maintainers "
        "run_after run_before join_path InstallError SkipTest ProcessError Executable which"
    ).split():
        setattr(package, name, globals()[name])
    package.__all__ = [n for n in vars(package) if not n.startswith("_")]
    spack = types.ModuleType("spack")
    spack.package = package
    cmake = types.ModuleType("spack_repo.builtin.build_systems.cmake")
    cmake.CMakePackage = CMakePackage
    cmake.generator = lambda *names, default=None: None
    modules = {"spack": spack, "spack.package": package, "spack_repo.builtin.build_systems.cmake": cmake}
    for name in ("spack_repo", "spack_repo.builtin", "spack_repo.builtin.build_systems"):
        modules[name] = types.ModuleType(name)
        modules[name].__path__ = []
    sys.modules.update(modules)


# ------------------------------------------------------ a concretised spec

TOKEN = re.compile(
    r"\s*(?:(?P<bool>[+~])(?P<flag>[A-Za-z_][\w-]*)"
    r"|%(?P<compiler>[\w-]+)(?:@(?P<compiler_versions>[\w.:]+))?"
    r"|@(?P<versions>[\w.:]+)"
    r"|(?P<key>[A-Za-z_][\w-]*)=(?P<value>[\w.:,-]+))"
)


def _version_tuple(text):
    return tuple(int(p) for p in text.split(".")) if re.fullmatch(r"\d+(\.\d+)*", text) else None


def _in_range(version, constraint):
    """version (a str) in a Spack range like 1.2, 1.2:, :9, 1:2 (prefix match)."""
    def prefix_le(a, b, upper):
        if upper:  # a <= b, b an upper bound matching as a prefix (:9 admits 9.4)
            return a[: len(b)] <= b
        return a >= b
    if ":" not in constraint:
        v, c = _version_tuple(version), _version_tuple(constraint)
        return version == constraint if v is None or c is None else v[: len(c)] == c
    low, high = constraint.split(":", 1)
    v = _version_tuple(version)
    if v is None:
        return False
    return (not low or prefix_le(v, _version_tuple(low), False)) and (
        not high or prefix_le(v, _version_tuple(high), True)
    )


class Variant:
    def __init__(self, value):
        self.value = value


class Libs:
    def __init__(self, directories):
        self.directories = directories


class FakeSpec:
    def __init__(self, name, prefix, version="0.1.0", variants=None, dependencies=None,
                 platform="linux", target="x86_64", compiler=("gcc", "12.2.0")):
        self.name, self.prefix, self.version = name, Prefix(prefix), version
        self.variants = {k: Variant(v) for k, v in (variants or {}).items()}
        self.dependencies = dependencies or {}
        self.platform, self.target, self.compiler = platform, target, compiler
        self.libs = Libs([self.prefix.lib])
        self.command = types.SimpleNamespace(path=os.path.join(self.prefix, "bin", name))

    def __getitem__(self, name):
        if name not in self.dependencies:
            raise KeyError(f"{name} is not a dependency of this {self.name} (declare it with depends_on)")
        return self.dependencies[name]

    def __contains__(self, name):
        return name in self.dependencies

    def satisfies(self, constraint):
        """The constraints the recipe may use on its own spec; anything else,
        or a variant it did not declare, is an error (a typo)."""
        text, position, result = constraint.strip(), 0, True
        while position < len(text):
            match = TOKEN.match(text, position)
            if not match:
                raise ValueError(f"spec constraint {constraint!r}: cannot read {text[position:]!r}")
            position = match.end()
            if match["bool"]:
                variant = declared.variants.get(match["flag"])
                if variant is None or variant.values != (True, False):
                    raise ValueError(f"{constraint!r}: {match['flag']} is not a boolean variant")
                result &= self.variants[match["flag"]].value == (match["bool"] == "+")
            elif match["compiler"]:
                name, version = self.compiler
                result &= name == match["compiler"] and (
                    not match["compiler_versions"] or _in_range(version, match["compiler_versions"])
                )
            elif match["versions"]:
                result &= _in_range(self.version, match["versions"])
            elif match["key"] == "platform":
                result &= self.platform == match["value"]
            elif match["key"] == "target":
                family = match["value"].rstrip(":")
                result &= self.target == family
            else:
                variant = declared.variants.get(match["key"])
                values = match["value"].split(",")
                if variant is None or any(v not in variant.values for v in values):
                    raise ValueError(f"{constraint!r}: {match['key']}={match['value']} is not a declared variant value")
                have = self.variants[match["key"]].value
                have = set(have) if isinstance(have, (tuple, list)) else {have}
                result &= set(values) <= have
        return result


def dependency_name(spec):
    match = re.match(r"[A-Za-z0-9_-]+", spec)
    return match.group(0) if match else spec


def admitted(spec):
    """Whether the concretizer may pick `spec`: no conflict holds, every
    requirement that applies is met. The reasons it may not."""
    why = []
    for c in declared.conflicts:
        if (not c.when or spec.satisfies(c.when)) and spec.satisfies(c.spec):
            why.append(f"conflicts({c.spec!r}, when={c.when!r})")
    for r in declared.requires:
        if r.when and not spec.satisfies(r.when):
            continue
        met = sum(1 for s in r.specs if spec.satisfies(s))
        if met == 0 or (r.policy == "one_of" and met > 1):
            why.append(f"requires{r.specs} when={r.when!r}")
    return why


def make_spec(work, variants, version="0.1.0", platform="linux", target="x86_64", compiler=("gcc", "12.2.0"), tag=""):
    """A spec of the recipe with these variants and, for each dependency its
    declarations make active, a fake installed dependency."""
    values = {name: v.default for name, v in declared.variants.items()}
    values.update(variants)
    for name, value in values.items():
        if declared.variants[name].multi and not isinstance(value, tuple):
            values[name] = (value,)
    root = os.path.join(work, f"spec{tag}")
    spec = FakeSpec("pyimport", os.path.join(root, "pyimport"), version, values, {}, platform, target, compiler)
    for d in declared.depends:
        if d.when and not spec.satisfies(d.when):
            continue
        name = dependency_name(d.spec)
        dep = FakeSpec(name, os.path.join(root, name))
        os.makedirs(dep.prefix.lib, exist_ok=True)
        if name == "mpich":
            open(os.path.join(dep.prefix.lib, "libmpi.so.12"), "w").close()
        elif name == "openmpi":
            open(os.path.join(dep.prefix.lib, "libmpi.so.40"), "w").close()
        elif name == "python":
            dep.command.path = "/usr/bin/python3"  # configure runs it
        elif name in PKG_CONFIG_MODULES:
            # The system's module, in the dependency's prefix: what Spack's
            # pkg-config finds of it (through CMAKE_PREFIX_PATH).
            found = subprocess.run(["pkg-config", "--variable=pcfiledir", PKG_CONFIG_MODULES[name]],
                                   text=True, stdout=subprocess.PIPE)
            pc = os.path.join(found.stdout.strip(), PKG_CONFIG_MODULES[name] + ".pc")
            if found.returncode != 0 or not os.path.isfile(pc):
                raise SystemExit(f"check_spack: this machine has no {PKG_CONFIG_MODULES[name]}.pc")
            os.makedirs(dep.prefix.lib.pkgconfig, exist_ok=True)
            os.symlink(pc, os.path.join(dep.prefix.lib.pkgconfig, os.path.basename(pc)))
        spec.dependencies[name] = dep
    return spec


# ------------------------------------------------------------- the checks


def load_recipe(path):
    install_stub()
    spec = importlib.util.spec_from_file_location("spack_repo.pyimport.packages.pyimport.package", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    recipe = getattr(module, "Pyimport", None)
    if recipe is None or not issubclass(recipe, CMakePackage):
        raise SystemExit("check_spack: the recipe defines no class Pyimport(CMakePackage)")
    recipe.name = "pyimport"
    return recipe


def check_declarations(work):
    names = [v for v, _ in declared.versions]
    if "main" not in names or not any(_version_tuple(v) for v in names):
        fail(f"versions {names}: want main and a numbered one")
    for name in ("mpi", "audit", "command", "modulefiles"):
        if name not in declared.variants:
            fail(f"no variant {name}")
    mpi = declared.variants.get("mpi")
    if mpi and (set(mpi.values) != {"none", "mpich", "openmpi"} or mpi.default != "none" or not mpi.multi):
        fail(f"variant mpi: values {mpi.values}, default {mpi.default}, multi {mpi.multi}")
    for d in declared.depends:
        name = dependency_name(d.spec)
        if name not in SPACK_PACKAGES | SPACK_VIRTUALS:
            fail(f"depends_on({d.spec!r}): Spack has no package or virtual {name}")
        if not set(d.type) <= DEPENDENCY_TYPES:
            fail(f"depends_on({d.spec!r}, type={d.type})")
    wanted = {
        "cmake": "build", "pkgconfig": "build", "libunwind": "link", "xxhash": "link",
        "python": "run", "mpich": "run", "openmpi": "run",
    }
    for name, kind in wanted.items():
        if not any(dependency_name(d.spec) == name and kind in d.type for d in declared.depends):
            fail(f"no {kind} dependency on {name}")
    for d in declared.depends:
        if dependency_name(d.spec) in ("mpich", "openmpi") and "link" in d.type:
            fail(f"{d.spec}: the MPI is loaded by path at run time, not linked")
    # Every condition is read (a typo in a variant name raises here), and
    # the platforms, targets and compilers admitted are the supported ones.
    cases = [
        ({}, "linux", "x86_64", ("gcc", "12.2.0"), True),
        ({}, "linux", "aarch64", ("gcc", "12.2.0"), True),
        ({"audit": False}, "linux", "ppc64le", ("gcc", "12.2.0"), True),
        ({"audit": True}, "linux", "ppc64le", ("gcc", "12.2.0"), False),
        ({"audit": False}, "darwin", "aarch64", ("apple-clang", "15.0.0"), False),
        ({"audit": False}, "windows", "x86_64", ("msvc", "19.0"), False),
        ({}, "linux", "x86_64", ("gcc", "9.4.0"), False),
        ({}, "linux", "x86_64", ("clang", "16.0.0"), True),
    ]
    for i, (variants, platform, target, compiler, expected) in enumerate(cases):
        try:
            spec = make_spec(work, variants, platform=platform, target=target, compiler=compiler, tag=f"a{i}")
            why = admitted(spec)
        except ValueError as error:
            fail(str(error))
            continue
        if (not why) != expected:
            fail(f"{variants} platform={platform} target={target} %{compiler[0]}@{compiler[1]}: "
                 f"{'refused: ' + ', '.join(why) if why else 'admitted'}, expected {'admitted' if expected else 'refused'}")


def parse_defines(args):
    defines = {}
    for arg in args:
        if arg == "":
            continue  # define_from_variant of an absent conditional variant
        match = re.fullmatch(r"-D([A-Za-z_][\w]*)(?::(\w+))?=(.*)", arg, re.S)
        if not match:
            fail(f"cmake_args() gives {arg!r}, not -DNAME[:TYPE]=VALUE")
            continue
        if match[1] in defines:
            fail(f"cmake_args() defines {match[1]} twice")
        defines[match[1]] = match[3]
    return defines


def unused_variables(output):
    """The names under CMake's 'Manually-specified variables were not used'."""
    lines = output.splitlines()
    names = []
    for i, line in enumerate(lines):
        if "Manually-specified variables were not used by the project" in line:
            for rest in lines[i + 1:]:
                if rest.strip() == "":
                    if names:
                        break
                    continue
                if not rest.startswith("    "):
                    break
                names.append(rest.strip())
    return names


def read_cache(build):
    cache = {}
    with open(os.path.join(build, "CMakeCache.txt")) as f:
        for line in f:
            match = re.match(r"([^#/][^:=]*):(\w+)=(.*)", line.rstrip("\n"))
            if match:
                cache[match[1]] = match[3]
    return cache


def install_scripts(build):
    text = ""
    for root, _, files in os.walk(build):
        if "cmake_install.cmake" in files:
            with open(os.path.join(root, "cmake_install.cmake")) as f:
                text += f.read()
    return text


def check_configuration(recipe, source, work, tag, variants):
    before = len(failures)
    spec = make_spec(work, variants, tag=tag)
    label = " ".join(f"{k}={','.join(v) if isinstance(v, tuple) else v}" for k, v in sorted(spec_values(spec).items()))
    why = admitted(spec)
    if why:
        fail(f"{label}: refused by the recipe ({', '.join(why)})")
        return
    try:
        args = recipe(spec).cmake_args()
    except Exception as error:  # noqa: BLE001 - any failure of the recipe is the finding
        fail(f"{label}: cmake_args() raised {type(error).__name__}: {error}")
        return
    defines = parse_defines(args)
    on = lambda flag: "ON" if spec.variants[flag].value else "OFF"  # noqa: E731
    mpi = set(spec.variants["mpi"].value)
    expected = {
        "BUILD_TESTING": "OFF",
        "PYIMPORT_AUDIT": on("audit"),
        "PYIMPORT_COMMAND": on("command"),
        "PYIMPORT_MODULEFILES": on("modulefiles"),
        "PYIMPORT_MPICH_LIBRARY": os.path.join(spec["mpich"].prefix, "lib", "libmpi.so.12") if "mpich" in mpi else "",
        "PYIMPORT_OPEN_MPI_LIBRARY": os.path.join(spec["openmpi"].prefix, "lib", "libmpi.so.40") if "openmpi" in mpi else "",
    }
    if spec.variants["command"].value:
        expected["Python3_EXECUTABLE"] = "/usr/bin/python3"
    for name, value in expected.items():
        if defines.get(name) != value:
            fail(f"{label}: {name} is {defines.get(name)!r}, expected {value!r}")
    if "Python3_EXECUTABLE" in defines and not spec.variants["command"].value:
        fail(f"{label}: Python3_EXECUTABLE given without the command")

    # Configure the project as Spack would: its standard arguments, then the recipe's.
    build, prefix = os.path.join(work, f"build{tag}"), spec.prefix
    standard = [
        "-G", "Unix Makefiles",
        _define("CMAKE_INSTALL_PREFIX", prefix),
        _define("CMAKE_INSTALL_RPATH_USE_LINK_PATH", True),
        _define("CMAKE_INSTALL_RPATH", [os.path.join(prefix, "lib"), os.path.join(prefix, "lib64")]),
        _define("CMAKE_PREFIX_PATH", [d.prefix for d in spec.dependencies.values()]),
        _define("CMAKE_BUILD_TYPE", "Release"),
    ]
    # pkg-config sees the declared dependencies only, as in Spack's build
    # environment: not this machine's other modules (its default path).
    environment = dict(os.environ, PKG_CONFIG_LIBDIR=os.path.join(work, "no-system-modules"))
    environment.pop("PKG_CONFIG_PATH", None)
    done = subprocess.run(["cmake", "-S", source, "-B", build, *standard, *(a for a in args if a)],
                          text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=environment)
    if done.returncode != 0:
        missing = sorted(set(re.findall(r"Package '([^']+)', required by 'virtual:world', not found", done.stdout)))
        why = (f" (it requires pkg-config module {', '.join(missing)}, which no dependency the recipe "
               "declares provides: a Spack build environment would not have it)") if missing else ""
        fail(f"{label}: the project does not configure with the recipe's arguments{why}:\n{done.stdout[-3000:]}")
        return
    unused = [n for n in unused_variables(done.stdout) if n in defines]
    if unused:
        fail(f"{label}: the project does not use {', '.join(unused)} (not an option or cache variable of it)")
    cache = read_cache(build)
    for name, value in defines.items():
        if name not in cache:
            fail(f"{label}: {name} is not in the project's cache")
        elif cache[name] != value and name != "Python3_EXECUTABLE":
            fail(f"{label}: the cache holds {name}={cache[name]!r}, the recipe gave {value!r}")
    # And the options do what the variants say.
    script = install_scripts(build)
    effects = {
        "audit": "libpyimport-audit.so" in script,
        "modulefiles": "modulefiles/pyimport" in script,
        "command": "pyimport.1" in script,
    }
    for flag, present in effects.items():
        if present != spec.variants[flag].value:
            fail(f"{label}: {'+' if spec.variants[flag].value else '~'}{flag}, but the install rules "
                 f"{'have' if present else 'lack'} its files")
    flags = ""
    for root, _, files in os.walk(os.path.join(build, "shim")):
        for name in files:
            if name == "flags.make":
                with open(os.path.join(root, name)) as f:
                    flags += f.read()
    for name in ("PYIMPORT_MPICH_LIBRARY", "PYIMPORT_OPEN_MPI_LIBRARY"):
        if defines.get(name) and defines[name] not in flags:
            fail(f"{label}: {name}={defines[name]} does not reach the shim's compile flags")
    if len(failures) == before:
        print(f"check_spack: {label}: the project uses its {len(defines)} definitions as the variants say")
    shutil.rmtree(build, ignore_errors=True)


def spec_values(spec):
    return {k: (v.value if not isinstance(v.value, bool) else ("+" if v.value else "~")) for k, v in spec.variants.items()}


def run_recipe_tests(recipe, work, build):
    """The recipe's test_* methods on `build` installed into a fresh prefix."""
    prefix = os.path.join(work, "installed")
    done = subprocess.run(["cmake", "--install", build, "--prefix", prefix], text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        fail(f"cmake --install {build}: {done.stdout[-2000:]}")
        return
    cache = read_cache(build)
    libdir = cache.get("CMAKE_INSTALL_LIBDIR", "lib")
    if libdir != "lib":  # the recipe installs to lib; this build dir does not
        os.symlink(libdir, os.path.join(prefix, "lib"))
    variants = {
        "audit": os.path.exists(os.path.join(prefix, libdir, "libpyimport-audit.so")),
        "command": cache.get("PYIMPORT_COMMAND", "OFF") in ("ON", "TRUE", "1"),
        "modulefiles": cache.get("PYIMPORT_MODULEFILES", "OFF") in ("ON", "TRUE", "1"),
    }
    spec = make_spec(work, variants, version=cache.get("CMAKE_PROJECT_VERSION", "0.1.0"), tag="t")
    spec.prefix = Prefix(prefix)
    package = recipe(spec)
    tests = [n for n in dir(recipe) if n.startswith("test_") and callable(getattr(recipe, n))]
    if not tests:
        fail("the recipe has no stand-alone test (test_* method)")
    for name in tests:
        try:
            getattr(package, name)()
            print(f"check_spack: {name}: passed on {prefix}")
        except SkipTest as why:
            print(f"check_spack: {name}: skipped ({why})")
        except Exception as error:  # noqa: BLE001
            fail(f"{name} on the installed {build}: {type(error).__name__}: {error}")
    for path in (os.path.join("lib", "libpyimport.so"),) + tuple(getattr(recipe, "sanity_check_is_file", ())):
        if not os.path.isfile(os.path.join(prefix, path)):
            fail(f"sanity_check_is_file: {path} is not in the installed tree")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("recipe")
    parser.add_argument("--build", help="a build directory to install and run the recipe's tests on")
    options = parser.parse_args()
    recipe = load_recipe(options.recipe)
    work = tempfile.mkdtemp(prefix="check_spack.")
    try:
        check_declarations(work)
        combinations = [
            {},
            {"audit": False, "command": False, "modulefiles": False, "mpi": "mpich"},
            {"mpi": "openmpi", "command": False},
            {"mpi": ("mpich", "openmpi"), "modulefiles": False},
        ]
        for i, variants in enumerate(combinations):
            check_configuration(recipe, os.path.abspath(options.source), work, str(i), variants)
        if options.build:
            run_recipe_tests(recipe, work, os.path.abspath(options.build))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        print(f"check_spack: {len(failures)} failure(s)", file=sys.stderr)
        return 1
    print("check_spack: the recipe's declarations and cmake_args() match the project")
    return 0


if __name__ == "__main__":
    sys.exit(main())
