/* caps.h - name the capability behind a kernel refusal (caps.c). Internal to the engine. */
#ifndef TW_CAPS_H
#define TW_CAPS_H

#include <stddef.h>

/* 1 if the process lacks `cap` (a kernel CAP_* number), counting CAP_SYS_ADMIN as CAP_BPF and
 * CAP_PERFMON; 0 if it has it or the kernel would not say. */
int tw_lacks_cap(int cap);

/* Writes into buf (and returns it) " (this process lacks CAP_A and CAP_B, needed to <why>)" for
 * those of `caps` (a list ended by -1, kernel CAP_* numbers) the process lacks, or, when it has
 * them all, " (this process has CAP_A and CAP_B: a seccomp profile or security module refused?)". */
const char *tw_caps_explain(char *buf, size_t len, const int *caps, const char *why);

/* " (the UMEM's N MiB are over RLIMIT_MEMLOCK, L MiB: ...fix...)" for an ENOBUFS at UMEM
 * registration, or "" when the process has CAP_IPC_LOCK (then the limit is not what refused). */
const char *tw_memlock_explain(char *buf, size_t len, size_t umem_bytes);

#endif
