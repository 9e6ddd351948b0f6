"""Run a command under a container seccomp profile, applied the way a container runtime applies it.

    python -m tests.support.seccomp_exec PROFILE.json CAP_A,CAP_B -- COMMAND ARGS...

runc (under podman, containerd and CRI-O alike) turns an OCI/Docker-format seccomp profile into a
kernel filter with libseccomp; this does the same with the same library, through ctypes, then
execs COMMAND under the filter. The profile's conditional rules are resolved as the runtimes do
for a container with the given capabilities on this machine's architecture: a rule whose
`includes.caps` are not all granted, or whose `excludes.caps` are, is left out; so are rules for
other architectures and syscalls this kernel's table does not know. Nothing is approximated:
the kernel enforces the filter, as it does in a container.

Used by tests/netns/test_agent_privileges.py (there is no image to run the engine in a real
container there; tests/e2e's podman run covers the whole Pod).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import platform
import sys

ACT_ALLOW = 0x7FFF0000
ACT_KILL_PROCESS = 0x80000000
ACT_TRAP = 0x00030000
ACT_LOG = 0x7FFC0000
COMPARE = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
           "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
# The profile's architecture names for this machine (Go's GOARCH spelling, as in the profiles).
NATIVE = {"x86_64": {"amd64"}, "aarch64": {"arm64"}}.get(platform.machine(), {platform.machine()})


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def errno_action(errno: int) -> int:
    return 0x00050000 | (errno & 0xFFFF)


def action(name: str, errno: int | None) -> int:
    if name == "SCMP_ACT_ALLOW":
        return ACT_ALLOW
    if name == "SCMP_ACT_ERRNO":
        return errno_action(1 if errno is None else errno)   # EPERM, as runc defaults
    return {"SCMP_ACT_KILL": ACT_KILL_PROCESS, "SCMP_ACT_KILL_PROCESS": ACT_KILL_PROCESS,
            "SCMP_ACT_TRAP": ACT_TRAP, "SCMP_ACT_LOG": ACT_LOG}[name]


def applies(rule: dict, caps: set[str]) -> bool:
    includes, excludes = rule.get("includes") or {}, rule.get("excludes") or {}
    if includes.get("caps") and not set(includes["caps"]) <= caps:
        return False
    if includes.get("arches") and not set(includes["arches"]) & NATIVE:
        return False
    if excludes.get("caps") and set(excludes["caps"]) & caps:
        return False
    if excludes.get("arches") and set(excludes["arches"]) & NATIVE:
        return False
    return True


def load(profile: dict, caps: set[str]) -> None:
    """Install `profile` as this process's seccomp filter (and no_new_privs, as libseccomp does)."""
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    default = action(profile["defaultAction"], profile.get("defaultErrnoRet"))
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise OSError("seccomp_init failed")
    for rule in profile.get("syscalls") or []:
        if not applies(rule, caps):
            continue
        act = action(rule["action"], rule.get("errnoRet"))
        if act == default:
            continue   # libseccomp refuses a rule that only repeats the default
        args = rule.get("args") or []
        array = (ArgCmp * max(1, len(args)))(*[ArgCmp(a["index"], COMPARE[a["op"]], a["value"],
                                                      a.get("valueTwo", 0)) for a in args])
        for name in rule["names"]:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:
                continue   # not a syscall on this architecture
            rc = lib.seccomp_rule_add_array(ctx, act, number, len(args), array)
            if rc != 0:
                raise OSError(-rc, f"seccomp rule for {name} ({rule['action']}) refused: {os.strerror(-rc)}")
    rc = lib.seccomp_load(ctx)
    if rc != 0:
        raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")


def main(argv: list[str]) -> None:
    profile_path, caps_text, dashdash, *command = argv
    if dashdash != "--" or not command:
        raise SystemExit(__doc__)
    caps = {c if c.startswith("CAP_") else f"CAP_{c}" for c in caps_text.split(",") if c}
    with open(profile_path, encoding="utf-8") as f:
        load(json.load(f), caps)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
