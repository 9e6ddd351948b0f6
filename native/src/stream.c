/* stream.c - creating and closing the book stream's shared-memory files (the hot-path writes
 * are inline in stream.h).
 *
 * Each file is built under a temporary name, fully initialised, then renamed over the old one:
 * a reader opening the path gets either the old file or the complete new one, never a half
 * written header. Before the rename the old file (if any) is marked ended, which covers an old
 * engine killed without its own close: its readers learn the stream ended instead of waiting
 * forever on a head that never moves.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "stream.h"

static int stream_fail(char *err, size_t errlen, int code, const char *what, const char *path)
{
    if (err && errlen)
        snprintf(err, errlen, "stream: %s %s: %s", what, path, strerror(code));
    return -code;
}

static int mkdir_p(char *path, mode_t mode)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        int rc = mkdir(path, mode);
        *p = '/';
        if (rc && errno != EEXIST)
            return -errno;
    }
    if (mkdir(path, mode) && errno != EEXIST)
        return -errno;
    return 0;
}

/* Mark an existing stream file ended (its state word sits at the same offset in both layouts). */
static void mark_old_ended(const char *path)
{
    _Static_assert(offsetof(struct twc_ring_header, state) == offsetof(struct twc_snap_header, state),
                   "one offset for the state word of both files");
    int fd = open(path, O_RDWR | O_CLOEXEC);
    struct stat st;
    if (fd < 0)
        return;
    if (fstat(fd, &st) == 0 && st.st_size >= 256) {
        uint64_t *head = mmap(NULL, 256, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (head != MAP_FAILED) {
            uint32_t *state = (uint32_t *)((char *)head + offsetof(struct twc_ring_header, state));
            if (head[0] == TWC_RING_MAGIC || head[0] == TWC_SNAP_MAGIC)
                __atomic_store_n(state, TWC_STATE_ENDED, __ATOMIC_RELEASE);
            munmap(head, 256);
        }
    }
    close(fd);
}

/* A zero-filled shared mapping of `len` bytes under a temporary name in dir; *tmp gets the name. */
static void *create_mapped(const char *dir, const char *name, size_t len, char *tmp, size_t tmplen,
                           char *err, size_t errlen, int *rc)
{
    snprintf(tmp, tmplen, "%s/.%s.%d.tmp", dir, name, (int)getpid());
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        *rc = stream_fail(err, errlen, errno, "cannot create", tmp);
        return NULL;
    }
    fchmod(fd, 0644); /* readers need read access only; the umask must not take it away */
    if (ftruncate(fd, (off_t)len)) {
        *rc = stream_fail(err, errlen, errno, "cannot size", tmp);
        close(fd);
        unlink(tmp);
        return NULL;
    }
    /* MAP_POPULATE: the pages exist before the first event, not on the hot path. */
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    int code = errno;
    close(fd);
    if (m == MAP_FAILED) {
        *rc = stream_fail(err, errlen, code, "cannot map", tmp);
        unlink(tmp);
        return NULL;
    }
    return m;
}

static int publish_file(const char *tmp, const char *dir, const char *name, char *err, size_t errlen)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    mark_old_ended(path);
    if (rename(tmp, path))
        return stream_fail(err, errlen, errno, "cannot rename into place", path);
    return 0;
}

static uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int tw_stream_open(struct tw_stream *s, const char *root, const char *feed, uint32_t ring_events,
                   uint32_t instruments, uint32_t depth, char *err, size_t errlen)
{
    char dir[512], tmp_ring[600], tmp_snap[600];
    int rc = 0;
    memset(s, 0, sizeof(*s));
    if (!feed[0] || strchr(feed, '/') || strcmp(feed, ".") == 0 || strcmp(feed, "..") == 0) {
        snprintf(err, errlen, "stream: feed name '%s' cannot name a directory (no '/', not empty)", feed);
        return -EINVAL;
    }
    if (!ring_events || (ring_events & (ring_events - 1)) || depth > TWC_MAX_DEPTH || !instruments) {
        snprintf(err, errlen, "stream: ring_events (%u) must be a power of two, depth (%u) at most "
                 "%d, instruments (%u) at least 1", ring_events, depth, TWC_MAX_DEPTH, instruments);
        return -EINVAL;
    }
    snprintf(dir, sizeof(dir), "%s/%s", root, feed);
    if ((rc = mkdir_p(dir, 0755)) != 0)
        return stream_fail(err, errlen, -rc, "cannot create directory", dir);
    chmod(dir, 0755);

    uint64_t generation = realtime_ns();
    s->ring_len = TWC_RING_HEADER_SIZE + (size_t)ring_events * sizeof(struct twc_event);
    s->ring = create_mapped(dir, "events", s->ring_len, tmp_ring, sizeof(tmp_ring), err, errlen, &rc);
    if (!s->ring)
        return rc;
    s->ring->magic = TWC_RING_MAGIC;
    s->ring->version = TWC_VERSION;
    s->ring->header_size = TWC_RING_HEADER_SIZE;
    s->ring->capacity = ring_events;
    s->ring->event_size = sizeof(struct twc_event);
    s->ring->state = TWC_STATE_LIVE;
    s->ring->generation = generation;
    snprintf(s->ring->feed, sizeof(s->ring->feed), "%s", feed);
    s->events = (struct twc_event *)((char *)s->ring + TWC_RING_HEADER_SIZE);
    s->mask = ring_events - 1;

    s->depth = depth;
    s->capacity = instruments;
    s->entry_size = twc_snap_entry_size(depth);
    s->snap_len = TWC_SNAP_HEADER_SIZE + (size_t)instruments * s->entry_size;
    s->snap = create_mapped(dir, "snapshot", s->snap_len, tmp_snap, sizeof(tmp_snap), err, errlen, &rc);
    if (!s->snap) {
        munmap(s->ring, s->ring_len);
        unlink(tmp_ring);
        s->ring = NULL;
        return rc;
    }
    s->snap->magic = TWC_SNAP_MAGIC;
    s->snap->version = TWC_VERSION;
    s->snap->header_size = TWC_SNAP_HEADER_SIZE;
    s->snap->capacity = instruments;
    s->snap->entry_size = s->entry_size;
    s->snap->depth = depth;
    s->snap->state = TWC_STATE_LIVE;
    s->snap->generation = generation;
    snprintf(s->snap->feed, sizeof(s->snap->feed), "%s", feed);
    s->entries = (char *)s->snap + TWC_SNAP_HEADER_SIZE;

    /* The snapshot first: a reader that finds the new ring also finds its snapshot. */
    if ((rc = publish_file(tmp_snap, dir, "snapshot", err, errlen)) != 0 ||
        (rc = publish_file(tmp_ring, dir, "events", err, errlen)) != 0) {
        unlink(tmp_snap);
        unlink(tmp_ring);
        tw_stream_close(s);
        return rc;
    }
    return 0;
}

uint32_t tw_stream_new_entry(struct tw_stream *s, uint16_t locate, const char symbol[8])
{
    if (s->count >= s->capacity)
        return UINT32_MAX;
    uint32_t index = s->count;
    struct twc_snap_entry *e = tw_stream_entry(s, index);
    struct twc_snap_entry fixed = {0};
    fixed.locate = locate;
    fixed.flags = TWC_SNAP_IN_USE;
    memcpy(fixed.symbol, symbol, 8);
    tw_stream_entry_begin(e);
    const uint64_t *src = (const uint64_t *)&fixed;
    for (unsigned i = 1; i < sizeof(fixed) / 8; i++)
        tw_stream_store64((uint64_t *)e + i, src[i]);
    tw_stream_entry_end(e);
    s->count++;
    /* Release: a reader that sees the new count sees the entry's initial contents. */
    __atomic_store_n(&s->snap->count, s->count, __ATOMIC_RELEASE);
    return index;
}

void tw_stream_close(struct tw_stream *s)
{
    if (s->ring) {
        __atomic_store_n(&s->ring->state, TWC_STATE_ENDED, __ATOMIC_RELEASE);
        munmap(s->ring, s->ring_len);
        s->ring = NULL;
    }
    if (s->snap) {
        __atomic_store_n(&s->snap->state, TWC_STATE_ENDED, __ATOMIC_RELEASE);
        munmap(s->snap, s->snap_len);
        s->snap = NULL;
    }
}
