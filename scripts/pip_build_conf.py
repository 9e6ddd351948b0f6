#!/usr/bin/env python3
"""Write a pip.conf for a container build that makes pip in the build behave as pip on this host.

    pip_build_conf.py OUT_PIP_CONF   (prints HOST_PATH:CONTAINER_PATH, one a line, to mount)

The host's effective pip settings come from `pip config list` (its config files and the PIP_*
environment variables, the variables winning as they do for pip). They are written under
[global]; every absolute local path they name (the CA bundle, find-links directories, file://
indexes, constraint files) is mounted read-only under MOUNT_ROOT in the build and the setting
points there. Not at the same path: apt in the build installs ca-certificates, which rewrites
/etc/ssl/certs/ca-certificates.crt, and dpkg fails on a read-only mount there. Nothing names a
package index here: the host's configuration does.
"""
from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys

LINE = re.compile(r"^(?P<scope>:env:|[a-z]+)\.(?P<key>[\w-]+)=(?P<value>.*)$")
# Settings that only make sense on the host (or would change the build's behaviour unseen).
SKIPPED = {"user", "target", "prefix", "root", "src", "cache-dir", "log"}
MOUNT_ROOT = "/run/host-pip"


def host_pip() -> list[str] | None:
    for candidate in ("pip3", "pip"):
        if shutil.which(candidate):
            return [candidate]
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0:
        return [sys.executable, "-m", "pip"]
    return None


def environment_settings() -> dict[str, str]:
    """PIP_* variables as pip reads them (PIP_FIND_LINKS -> find-links)."""
    return {name[4:].lower().replace("_", "-"): value for name, value in os.environ.items()
            if name.startswith("PIP_") and name != "PIP_CONFIG_FILE"}


def effective_settings() -> dict[str, str]:
    pip = host_pip()
    if pip is None:
        # A fresh Debian has no pip outside the project's venv: its variables still count.
        return {k: v for k, v in environment_settings().items() if k not in SKIPPED}
    result = subprocess.run([*pip, "config", "list"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise SystemExit(f"pip_build_conf: `pip config list` failed: {result.stderr.strip()}")
    files, env = {}, {}
    for line in result.stdout.splitlines():
        match = LINE.match(line.strip())
        if not match or match["key"] in SKIPPED:
            continue
        value = match["value"]
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        target = env if match["scope"] == ":env:" else files
        if match["scope"] in (":env:", "global", "install", "wheel", "download"):
            target[match["key"]] = value
    return {**files, **env}


def mount_local_paths(key: str, value: str, mounts: dict[str, str]) -> str:
    """`value` with each local path it names moved under MOUNT_ROOT; `mounts` gets host ->
    container for each."""
    tokens = []
    for token in value.split():
        scheme = "file://" if token.startswith("file://") else ""
        path = token[len(scheme):]
        if not (path.startswith("/") and os.path.exists(path)):
            tokens.append(token)
            continue
        path = path.rstrip("/") or "/"
        # A local simple index links its files relative to itself (../../files/x.whl): mount the
        # tree it lives in.
        mounted = os.path.dirname(path) if key.endswith("index-url") else path
        mounts[mounted] = MOUNT_ROOT + mounted
        tokens.append(scheme + MOUNT_ROOT + path)
    return " ".join(tokens)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    mounts: dict[str, str] = {}
    settings = {key: mount_local_paths(key, value, mounts) for key, value in effective_settings().items()}
    config = configparser.ConfigParser(interpolation=None)
    config["global"] = settings
    with open(argv[0], "w") as f:
        config.write(f)
    print("\n".join(f"{host}:{container}" for host, container in sorted(mounts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
