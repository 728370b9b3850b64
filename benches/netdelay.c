/*
 * netdelay: a user-space stand-in for `tc qdisc ... netem delay`, for kernels built without
 * sch_netem (this sandbox's: CONFIG_NET_SCH_NETEM is not set, `tc qdisc add ... netem` says
 * "Specified qdisc kind is unknown").
 *
 * It makes one point-to-point IP link out of two TUN devices: HOST_IF in the namespace it is
 * started in, NS_IF in the network namespace NETNS_PATH (e.g. /run/netns/astbench). Every
 * packet read from one device is written to the other DELAY_US microseconds after it was
 * read, in order: a fixed one-way delay in each direction, like netem on both ends of a veth
 * pair. `benches/run` gives the devices their addresses (10.200.0.1/30 host side,
 * 10.200.0.2/30 inside the namespace), so a client in the namespace talking to a server on
 * 10.200.0.1 sees a round trip of 2 x DELAY_US plus this program's wake-up latency (measured
 * and reported by `benches/run` with ping).
 *
 * DELAY_US is a number of microseconds, or the path of a file holding one: the file is read
 * again on SIGHUP, which is how benches/run calibrates the delay so that the round trip
 * measured through PostgreSQL comes out at the target.
 *
 * It exits by itself after MAX_SECONDS, on SIGTERM/SIGINT, or when a device goes away; the
 * devices are not persistent and disappear with it. Queues are bounded (packets beyond
 * QUEUE_LIMIT in flight per direction are dropped, as netem's default limit of 1000 does).
 *
 * Usage: netdelay DELAY_US HOST_IF NETNS_PATH NS_IF MAX_SECONDS
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define QUEUE_LIMIT 4096
#define MAX_PACKET 65536
#define SLOT_SIZE 2048

struct packet {
    uint64_t due_ns;
    size_t len;
    unsigned char *data;
};

struct queue {
    struct packet slots[QUEUE_LIMIT];
    size_t head, count;
    uint64_t dropped;
};

static volatile sig_atomic_t stop, reload;

static void on_signal(int signo) { (void)signo; stop = 1; }
static void on_hup(int signo) { (void)signo; reload = 1; }

/* DELAY_US as a number, or read from the file it names. */
static uint64_t delay_from(const char *arg) {
    if (arg[0] != '/') return strtoull(arg, NULL, 10) * 1000u;
    FILE *file = fopen(arg, "r");
    double us = -1;
    if (!file || fscanf(file, "%lf", &us) != 1 || us < 0) {
        fprintf(stderr, "netdelay: cannot read a delay from %s\n", arg);
        exit(2);
    }
    fclose(file);
    return (uint64_t)(us * 1000.0);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static int open_tun(const char *name) {
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) die("open /dev/net/tun");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) die("TUNSETIFF");
    return fd;
}

/* Reads every packet waiting on `fd` into `q`, due `delay_ns` from now. */
static int fill(int fd, struct queue *q, uint64_t delay_ns, unsigned char *buffer) {
    for (;;) {
        ssize_t n = read(fd, buffer, MAX_PACKET);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) return 0;
            return -1;
        }
        if (n == 0) return -1;
        /* The devices keep their MTU of 1500 and do no offloading: nothing is larger. */
        if (q->count == QUEUE_LIMIT || n > SLOT_SIZE) {
            q->dropped++;
            continue;
        }
        struct packet *p = &q->slots[(q->head + q->count) % QUEUE_LIMIT];
        p->due_ns = now_ns() + delay_ns;
        p->len = (size_t)n;
        memcpy(p->data, buffer, (size_t)n);
        q->count++;
    }
}

/* Writes to `fd` the packets of `q` that are due; returns the next due time (0: none). */
static uint64_t drain(int fd, struct queue *q) {
    uint64_t now = now_ns();
    while (q->count > 0) {
        struct packet *p = &q->slots[q->head];
        if (p->due_ns > now) return p->due_ns;
        /* A device that is down (EIO) or busy drops the packet, as a link would. */
        if (write(fd, p->data, p->len) < 0 && errno != EAGAIN && errno != EIO && errno != EINVAL)
            die("write");
        q->head = (q->head + 1) % QUEUE_LIMIT;
        q->count--;
    }
    return 0;
}

static void alloc_queue(struct queue *q) {
    memset(q, 0, sizeof *q);
    for (size_t i = 0; i < QUEUE_LIMIT; i++) {
        q->slots[i].data = malloc(SLOT_SIZE);
        if (!q->slots[i].data) die("malloc");
    }
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s DELAY_US HOST_IF NETNS_PATH NS_IF MAX_SECONDS\n", argv[0]);
        return 2;
    }
    uint64_t delay_ns = delay_from(argv[1]);
    uint64_t deadline = now_ns() + strtoull(argv[5], NULL, 10) * 1000000000u;
    /* Wake up on time: the default timer slack (50 us) is a fifth of the delay. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    struct sigaction hup;
    memset(&hup, 0, sizeof hup);
    hup.sa_handler = on_hup;
    sigaction(SIGHUP, &hup, NULL);

    int host_fd = open_tun(argv[2]);
    int ns = open(argv[3], O_RDONLY | O_CLOEXEC);
    if (ns < 0) die(argv[3]);
    /* The device is created in the namespace of the process that opens /dev/net/tun. */
    if (setns(ns, CLONE_NEWNET) < 0) die("setns");
    int ns_fd = open_tun(argv[4]);
    close(ns);
    int timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (timer < 0) die("timerfd_create");

    static struct queue to_ns, to_host;
    alloc_queue(&to_ns);
    alloc_queue(&to_host);
    static unsigned char buffer[MAX_PACKET];

    printf("ready\n");
    fflush(stdout);

    struct pollfd fds[3] = {
        {.fd = host_fd, .events = POLLIN},
        {.fd = ns_fd, .events = POLLIN},
        {.fd = timer, .events = POLLIN},
    };
    while (!stop && now_ns() < deadline) {
        int ready = poll(fds, 3, 1000);
        if (ready < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        if (reload) {
            reload = 0;
            delay_ns = delay_from(argv[1]);
            fprintf(stderr, "netdelay: one-way delay now %.1f us\n", delay_ns / 1000.0);
        }
        if (fds[2].revents & POLLIN) {
            uint64_t expirations;
            (void)!read(timer, &expirations, sizeof expirations);
        }
        if ((fds[0].revents & POLLIN) && fill(host_fd, &to_ns, delay_ns, buffer) < 0) break;
        if ((fds[1].revents & POLLIN) && fill(ns_fd, &to_host, delay_ns, buffer) < 0) break;
        if ((fds[0].revents | fds[1].revents) & (POLLERR | POLLHUP | POLLNVAL)) break;
        uint64_t next_ns = drain(ns_fd, &to_ns);
        uint64_t next_host = drain(host_fd, &to_host);
        uint64_t next = next_ns == 0 ? next_host
                        : next_host == 0 ? next_ns
                        : (next_ns < next_host ? next_ns : next_host);
        struct itimerspec spec;
        memset(&spec, 0, sizeof spec);
        if (next != 0) {
            spec.it_value.tv_sec = (time_t)(next / 1000000000u);
            spec.it_value.tv_nsec = (long)(next % 1000000000u);
        }
        if (timerfd_settime(timer, TFD_TIMER_ABSTIME, &spec, NULL) < 0) die("timerfd_settime");
    }
    fprintf(stderr, "netdelay: exiting (dropped %llu packets to the namespace, %llu to the host)\n",
            (unsigned long long)to_ns.dropped, (unsigned long long)to_host.dropped);
    return 0;
}
