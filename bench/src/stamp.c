/* stamp [MS]: a service for bench/gap. Appends "S <CLOCK_MONOTONIC ns>" to
 * ./stamps as soon as it runs, sleeps MS milliseconds, appends
 * "E <ns>" and exits 0. Unless argv[1] is a number, MS is read from ./ms,
 * so the binary itself can be a runit/daemontools/s6 "./run" (s6-supervise
 * passes an argument of its own). If
 * ./notification-fd exists (s6), a newline on fd 3 tells s6-supervise the
 * service is ready. Written for this bench; one write(2) per line with
 * O_APPEND, so concurrent writers never interleave within a line. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void mark(int fd, char kind) {
    struct timespec t;
    char buf[48];
    clock_gettime(CLOCK_MONOTONIC, &t);
    int n = snprintf(buf, sizeof buf, "%c %lld\n", kind, (long long)t.tv_sec * 1000000000LL + t.tv_nsec);
    if (write(fd, buf, (size_t)n) != n) _exit(1);
}

int main(int argc, char **argv) {
    long ms = 0;
    if (argc > 1 && argv[1][0] >= '0' && argv[1][0] <= '9') {
        ms = atol(argv[1]);
    } else {
        FILE *f = fopen("ms", "r");
        if (f) {
            if (fscanf(f, "%ld", &ms) != 1) ms = 0;
            fclose(f);
        }
    }
    int fd = open("stamps", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return 1;
    mark(fd, 'S');
    if (access("notification-fd", F_OK) == 0 && write(3, "\n", 1) == 1) close(3);
    struct timespec d = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&d, &d) != 0) {}
    mark(fd, 'E');
    return 0;
}
