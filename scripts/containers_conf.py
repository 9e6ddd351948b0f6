#!/usr/bin/env python3
"""Set keys in podman's /etc/containers/containers.conf without touching anything else in it.

    containers_conf.py FILE SECTION.KEY=TOML_VALUE ...

Each key is replaced where it is set (inside its [section]) or added under the section's header
(the section is appended if missing). Comments and every other setting stay as they are, so a
second run changes nothing. The result is parsed with tomllib before it replaces the file: a
file podman could not read is never written.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
import tomllib

SECTION = re.compile(r"^\s*\[([A-Za-z0-9_.-]+)\]\s*(#.*)?$")


def set_key(lines: list[str], section: str, key: str, value: str) -> list[str]:
    assignment = f"{key} = {value}\n"
    current, header_at, key_re = None, None, re.compile(rf"^\s*{re.escape(key)}\s*=")
    for i, line in enumerate(lines):
        match = SECTION.match(line)
        if match:
            current = match.group(1)
            if current == section and header_at is None:
                header_at = i
        elif current == section and key_re.match(line):
            # A multi-line array value ends at the line holding its closing bracket.
            end = i
            if line.split("=", 1)[1].strip().startswith("[") and "]" not in line:
                while end + 1 < len(lines) and "]" not in lines[end]:
                    end += 1
            return lines[:i] + [assignment] + lines[end + 1:]
    if header_at is None:
        return lines + ([] if not lines or lines[-1].endswith("\n") else ["\n"]) + [f"\n[{section}]\n", assignment]
    return lines[:header_at + 1] + [assignment] + lines[header_at + 1:]


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    path, settings = argv[0], argv[1:]
    try:
        with open(path) as f:
            lines = f.readlines()
    except FileNotFoundError:
        lines = []
    updated = list(lines)
    for setting in settings:
        name, sep, value = setting.partition("=")
        section, dot, key = name.rpartition(".")
        if not (sep and dot and section and key):
            print(f"containers_conf: {setting!r} is not SECTION.KEY=VALUE", file=sys.stderr)
            return 2
        updated = set_key(updated, section, key, value)
    text = "".join(updated)
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        print(f"containers_conf: {path} would not be valid TOML ({err}); left unchanged", file=sys.stderr)
        return 1
    for setting in settings:
        name, _, value = setting.partition("=")
        section, _, key = name.rpartition(".")
        node = parsed
        for part in section.split("."):
            node = node[part]
        assert node[key] == tomllib.loads(f"v = {value}")["v"], setting
    if text != "".join(lines):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)))
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        print(f"containers_conf: updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
