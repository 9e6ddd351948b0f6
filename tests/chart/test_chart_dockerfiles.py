"""The container images' Dockerfiles, checked statically (tests/e2e/test_images.py builds nothing
but starts the images `make images` built with podman).

The files are parsed with the `dockerfile` package, which wraps BuildKit's own Dockerfile parser,
so line continuations, flags and JSON forms are read exactly as `docker build` reads them. What a
build would need and cannot get here (the base image, apt, PyPI) is not exercised; what can be
checked is: the stages, the packages each stage installs (and that each name is a real Debian 12
package, because this machine is Debian 12 with them installed by `make setup`), that everything
the build copies exists, the user each image runs as, and that the operator never loads the
engine's native code (its image leaves out libxdp and libbpf).
"""
from __future__ import annotations

import pathlib
import re
import shlex
import subprocess
import sys
import tomllib

import dockerfile
import helm_python as helm
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
IMAGES = {"operator": ROOT / "docker" / "operator.Dockerfile", "agent": ROOT / "docker" / "agent.Dockerfile"}
BUILD_PACKAGES = {"build-essential", "clang", "llvm", "libxdp-dev", "libbpf-dev", "python3-venv", "python3-dev"}


def stages(path: pathlib.Path) -> list[dict]:
    """[{name, base, commands}] per FROM, with ARG defaults substituted into FROM."""
    args, result = {}, []
    for command in dockerfile.parse_file(str(path)):
        if command.cmd == "ARG" and not result:
            name, _, default = command.value[0].partition("=")
            args[name] = default
        elif command.cmd == "FROM":
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], command.value[0])
            name = command.value[2] if len(command.value) == 3 and command.value[1].upper() == "AS" else None
            result.append({"name": name, "base": base, "commands": []})
        else:
            result[-1]["commands"].append(command)
    return result


def apt_installed(stage: dict) -> set[str]:
    packages = set()
    for command in stage["commands"]:
        if command.cmd != "RUN":
            continue
        text = " ".join(command.value)
        for match in re.finditer(r"apt-get install ((?:\s*-[-\w]+)*)((?:\s+[a-z0-9][a-z0-9.+-]+)+)", text):
            packages |= set(match.group(2).split())
    return packages


def last(commands, cmd):
    found = [c for c in commands if c.cmd == cmd]
    return found[-1] if found else None


@pytest.mark.parametrize("image", list(IMAGES))
def test_multi_stage_on_pinned_debian(image):
    parsed = stages(IMAGES[image])
    assert [s["name"] for s in parsed] == ["build", "runtime"]
    for stage in parsed:
        assert stage["base"] == "debian:bookworm-slim", stage["base"]
    text = IMAGES[image].read_text()
    assert ":latest" not in text and not re.search(r"^FROM\s+[^:\s$]+(\s|$)", text, re.M), "every base image is tagged"


@pytest.mark.parametrize("image", list(IMAGES))
def test_build_stage_builds_the_engine_into_a_wheel(image):
    build = stages(IMAGES[image])[0]
    assert BUILD_PACKAGES <= apt_installed(build)
    runs = " ".join(" ".join(c.value) for c in build["commands"] if c.cmd == "RUN")
    assert "pip wheel --no-cache-dir --wheel-dir /wheels ." in runs, "the build stage makes wheels of the project"


@pytest.mark.parametrize("image", list(IMAGES))
def test_runtime_is_minimal_and_installs_offline(image):
    runtime = stages(IMAGES[image])[1]
    installed = apt_installed(runtime)
    wanted = {"python3", "python3-venv"} | ({"libxdp1", "libbpf1"} if image == "agent" else set())
    assert installed == wanted, f"{image} runtime installs {installed}, expected {wanted}"
    runs = " ".join(" ".join(c.value) for c in runtime["commands"] if c.cmd == "RUN")
    assert "--no-index --find-links=/wheels tickwire" in runs, "the runtime must not reach a package index"
    assert any("from=build" in " ".join(c.flags) for c in runtime["commands"] if c.cmd == "RUN")
    assert "rm -rf /var/lib/apt/lists/*" in runs


def test_every_apt_package_named_is_a_debian_12_package():
    names = set()
    for path in IMAGES.values():
        for stage in stages(path):
            names |= apt_installed(stage)
    result = subprocess.run(["dpkg-query", "-W", "-f=${Package}\\n", *sorted(names)],
                            capture_output=True, text=True, timeout=30)
    known = set(result.stdout.split())
    assert names <= known, f"not known to this Debian 12 machine: {sorted(names - known)} ({result.stderr.strip()})"


@pytest.mark.parametrize("image", list(IMAGES))
def test_everything_copied_exists_and_is_not_ignored(image):
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for command in stages(IMAGES[image])[0]["commands"]:
        if command.cmd != "COPY" or any(f.startswith("--from") for f in command.flags):
            continue
        for source in command.value[:-1]:
            assert (ROOT / source).exists(), f"{image}: COPY {source}: no such file in the repository"
            assert source.rstrip("/") not in ignored, f"{image}: COPY {source} but .dockerignore drops it"
    for junk in (".venv", ".git", "**/*.so", "**/*.o", "tests"):
        assert junk in ignored, f".dockerignore should keep {junk} out of the build context"


def test_operator_image_runs_as_the_chart_s_non_root_user():
    runtime = stages(IMAGES["operator"])[1]
    user = last(runtime["commands"], "USER").value[0]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root USER, so runAsNonRoot can verify it"
    with helm.Chart.load(str(ROOT / "charts" / "tickwire")) as chart:
        rendered = chart.render({}, name="tw", namespace="tickwire-system", is_install=True)
    deployment = yaml.safe_load(rendered["tickwire/templates/operator-deployment.yaml"])
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)
    entrypoint = last(runtime["commands"], "ENTRYPOINT")
    assert entrypoint.json and entrypoint.value == ("python3", "-m", "tickwire_operator")


def test_agent_image_runs_as_root_and_says_why():
    runtime = stages(IMAGES["agent"])[1]
    assert last(runtime["commands"], "USER").value[0] == "0:0"
    assert "file capabilities" in IMAGES["agent"].read_text()
    assert last(runtime["commands"], "ENTRYPOINT").value == ("tickwire-agent",)


def test_the_operator_never_loads_the_engine():
    """Its image has no libxdp/libbpf: importing every operator module must not load them."""
    probe = (
        "import importlib, pkgutil, sys\n"
        "import tickwire_operator\n"
        "for m in pkgutil.walk_packages(tickwire_operator.__path__, 'tickwire_operator.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "import tickwire_operator.__main__\n"
        "loaded = sorted(n for n in sys.modules if n.startswith('tickwire_engine._native') or n == '_cffi_backend')\n"
        "maps = open('/proc/self/maps').read()\n"
        "print(loaded, 'libxdp' in maps, 'libbpf' in maps)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] False False", result.stdout


@pytest.mark.parametrize("image", list(IMAGES))
def test_the_build_copies_every_package_dir_the_wheel_needs(image):
    """`pip wheel .` fails when a package dir pyproject.toml names is missing from the context."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dirs = {path.split("/")[0] for path in pyproject["tool"]["setuptools"]["package-dir"].values()}
    copied = {source.rstrip("/").split("/")[0] for c in stages(IMAGES[image])[0]["commands"]
              if c.cmd == "COPY" for source in c.value[:-1]}
    assert dirs <= copied, f"{image}: pyproject.toml packages live in {sorted(dirs - copied)}, not copied"


def test_the_operator_image_s_default_command_parses():
    """ENTRYPOINT + CMD must be a command line the operator accepts (it once said
    --all-namespaces, an argument error on start)."""
    runtime = stages(IMAGES["operator"])[1]
    cmd = last(runtime["commands"], "CMD")
    assert cmd.json, "exec form, so no shell sits between the runtime and the operator"
    probe = ("import sys; from tickwire_operator.__main__ import parse_args; "
             "a = parse_args(sys.argv[1:]); print(a.standalone, a.liveness)")
    done = subprocess.run([sys.executable, "-c", probe, *cmd.value], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"CMD {shlex.join(cmd.value)}: {done.stderr.strip()}"
    port = yaml.safe_load((ROOT / "charts" / "tickwire" / "values.yaml").read_text())["operator"]["livenessPort"]
    assert done.stdout.split() == ["True", f"http://0.0.0.0:{port}/healthz"], "the chart's liveness port"
