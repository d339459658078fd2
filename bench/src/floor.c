/* floor N PROG [ARG...]: the kernel's floor for a restart, written for
 * bench/gap. Runs PROG N times, one after the other: fork, execv, waitpid,
 * and again at once. No supervisor logic at all, so the gap between one
 * run's exit and the next run's start is what fork/exec/wait cost here. */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int n = atoi(argv[1]);
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0) return 1;
        if (pid == 0) {
            execv(argv[2], argv + 2);
            _exit(127);
        }
        int status;
        while (waitpid(pid, &status, 0) < 0) {}
    }
    return 0;
}
