/* The relay benchmark's baseline: the least a receiver can do in C.
 *
 * recvmmsg batches of up to 256 datagrams, one writev of the whole batch to a file,
 * and, when a group is given, one sendmmsg of the batch to it. On SIGTERM or SIGINT it
 * prints the number of datagrams received and exits.
 *
 * usage: baseline PORT FILE [GROUP_HOST GROUP_PORT]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define BATCH 256
#define SLOT 2048

static volatile sig_atomic_t stopping = 0;

static void on_signal(int sig) { (void)sig; stopping = 1; }

int main(int argc, char **argv) {
    if (argc != 3 && argc != 5) {
        fprintf(stderr, "usage: %s PORT FILE [GROUP_HOST GROUP_PORT]\n", argv[0]);
        return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    int sock = socket(AF_INET, SOCK_DGRAM, 0);
    int rcvbuf = 64 << 20;
    setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    setsockopt(sock, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf); /* as the relay */
    struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &local.sin_addr);
    if (bind(sock, (struct sockaddr *)&local, sizeof local) < 0) { perror("bind"); return 1; }

    int out = -1;
    struct sockaddr_in group = {.sin_family = AF_INET};
    if (argc == 5) {
        out = socket(AF_INET, SOCK_DGRAM, 0);
        struct in_addr loopback;
        inet_pton(AF_INET, "127.0.0.1", &loopback);
        setsockopt(out, IPPROTO_IP, IP_MULTICAST_IF, &loopback, sizeof loopback);
        inet_pton(AF_INET, argv[3], &group.sin_addr);
        group.sin_port = htons(atoi(argv[4]));
    }
    int fd = open(argv[2], O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) { perror("open"); return 1; }

    static char buffers[BATCH][SLOT];
    static struct iovec iov[BATCH], wiov[BATCH];
    static struct mmsghdr msgs[BATCH], sends[BATCH];
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = buffers[i];
        iov[i].iov_len = SLOT;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        sends[i].msg_hdr.msg_iov = &wiov[i];
        sends[i].msg_hdr.msg_iovlen = 1;
        sends[i].msg_hdr.msg_name = &group;
        sends[i].msg_hdr.msg_namelen = sizeof group;
    }
    struct pollfd pfd = {.fd = sock, .events = POLLIN};
    long long count = 0;
    while (!stopping) {
        int n = recvmmsg(sock, msgs, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) {
            poll(&pfd, 1, 50);
            continue;
        }
        count += n;
        for (int i = 0; i < n; i++) {
            wiov[i].iov_base = buffers[i];
            wiov[i].iov_len = msgs[i].msg_len;
        }
        if (writev(fd, wiov, n) < 0) { perror("writev"); return 1; }
        for (int sent = 0; out >= 0 && sent < n;) {
            int k = sendmmsg(out, sends + sent, n - sent, 0);
            if (k <= 0) break;
            sent += k;
        }
    }
    close(fd);
    printf("%lld\n", count);
    return 0;
}
