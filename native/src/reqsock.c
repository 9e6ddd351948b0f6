/* reqsock.c - the engine's re-request socket.
 *
 * One UDP socket per engine, connected to the re-request server: the kernel picks an ephemeral
 * port (so a second engine or client on the host has its own and never sees these answers) and
 * delivers only datagrams whose source is the server. Answers from anywhere else never reach
 * the decoder; those from the server are still checked message by message (tw_decode_reply).
 * The poll thread calls tw_reqsock_service() only while requests are outstanding, and now and
 * then when none are (late answers are drained and counted), so the steady state costs nothing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "reqsock.h"

int tw_reqsock_open(struct tw_reqsock *rs, uint32_t addr_be, uint16_t port_be, char *err,
                    size_t errlen)
{
    struct sockaddr_in server = {.sin_family = AF_INET, .sin_port = port_be,
                                 .sin_addr.s_addr = addr_be};
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int code = errno;
        snprintf(err, errlen, "cannot open the re-request socket: %s", strerror(code));
        return -code;
    }
    if (connect(fd, (struct sockaddr *)&server, sizeof(server)) != 0) {
        int code = errno;
        char addr[INET_ADDRSTRLEN];
        const uint8_t *b = (const uint8_t *)&addr_be;
        snprintf(addr, sizeof(addr), "%u.%u.%u.%u", b[0], b[1], b[2], b[3]);
        snprintf(err, errlen, "cannot reach the re-request server %s:%u: %s", addr,
                 (unsigned)ntohs(port_be), strerror(code));
        close(fd);
        return -code;
    }
    rs->fd = fd;
    return 0;
}

void tw_reqsock_close(struct tw_reqsock *rs)
{
    if (rs->fd >= 0)
        close(rs->fd);
    rs->fd = -1;
}

int tw_reqsock_service(struct tw_reqsock *rs, struct tw_decoder *d, const struct tw_clock *now,
                       uint64_t *send_errors)
{
    uint8_t request[TW_MOLD_REQUEST_LEN];
    struct mmsghdr msgs[TW_REPLY_BATCH];
    struct iovec iov[TW_REPLY_BATCH];
    int worked = 0;

    if (rs->fd < 0)
        return 0;
    /* bounded: the rate's burst (at most TW_MAX_REQUESTS) limits what one call can send */
    for (int i = 0; i < TW_MAX_REQUESTS && tw_decoder_next_request(d, now, request); i++) {
        if (send(rs->fd, request, sizeof(request), MSG_DONTWAIT) != (ssize_t)sizeof(request))
            (*send_errors)++; /* ECONNREFUSED from an earlier ICMP, a full buffer: it times out */
        worked = 1;
    }
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < TW_REPLY_BATCH; i++) {
        iov[i] = (struct iovec){.iov_base = rs->buf[i], .iov_len = TW_REPLY_MAX};
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(rs->fd, msgs, TW_REPLY_BATCH, MSG_DONTWAIT, NULL);
    for (int i = 0; i < n; i++) {
        uint32_t len = msgs[i].msg_len;
        if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC)
            len = 0; /* cut short: rejected whole rather than read in part */
        tw_decode_reply(d, rs->buf[i], len, now);
        worked = 1;
    }
    return worked;
}
