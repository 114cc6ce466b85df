/*
 * jail-probe: what a compromised worker would try first, one attempt per mode. Built
 * static by the hostile tests (gcc -static) and run inside the worker's jail. Prints one
 * line "<mode>: ok ..." when the attempt succeeded, "<mode>: denied <errno name>" when
 * it failed; exits 0 either way so the test reads the verdict from the line.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int report(const char *mode, int result) {
  if (result == 0) printf("%s: ok euid=%d\n", mode, (int)geteuid());
  else printf("%s: denied %s\n", mode, strerrorname_np(errno));
  return 0;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  /* These attempts succeed as root on the host (a mount over /tmp, say): run only jailed. */
  if (getuid() == 0) {
    fprintf(stderr, "jail-probe: refusing to run with real uid 0: run it inside a worker jail\n");
    return 3;
  }
  if (strcmp(mode, "setuid") == 0) {
    /* Run from a setuid-root copy: did exec give us euid 0? Then try to become root. */
    printf("setuid-exec: euid=%d\n", (int)geteuid());
    return report("setuid", setuid(0));
  }
  if (strcmp(mode, "userns") == 0) return report("userns", unshare(CLONE_NEWUSER));
  if (strcmp(mode, "netns") == 0) return report("netns", unshare(CLONE_NEWNET));
  if (strcmp(mode, "clone-userns") == 0) {
    long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid((pid_t)pid, NULL, 0);
    return report("clone-userns", pid > 0 ? 0 : -1);
  }
  if (strcmp(mode, "ptrace") == 0 && argc > 2) return report("ptrace", (int)ptrace(PTRACE_ATTACH, atoi(argv[2]), 0, 0));
  if (strcmp(mode, "mount") == 0) return report("mount", mount("none", "/tmp", "tmpfs", 0, ""));
  if (strcmp(mode, "mem") == 0 && argc > 2) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%s/mem", argv[2]);
    int fd = open(path, O_RDONLY);
    return report("mem", fd >= 0 ? 0 : -1);
  }
  if (strcmp(mode, "tiocsti") == 0) {
    char c = 'x';
    return report("tiocsti", ioctl(0, 0x5412, &c));
  }
  if (strcmp(mode, "scanmem") == 0 && argc > 3) {
    /* Reads every readable mapping of PID through /proc/PID/mem and looks for PATTERN. */
    char path[64];
    snprintf(path, sizeof path, "/proc/%s/maps", argv[2]);
    FILE *maps = fopen(path, "r");
    snprintf(path, sizeof path, "/proc/%s/mem", argv[2]);
    int mem = open(path, O_RDONLY);
    if (maps == NULL || mem < 0) return report("scanmem", -1);
    size_t length = strlen(argv[3]), chunk = 1 << 20;
    char *buffer = malloc(chunk + length);
    unsigned long start, end, scanned = 0;
    char perms[8];
    int found = 0;
    while (!found && fscanf(maps, "%lx-%lx %7s %*[^\n]", &start, &end, perms) == 3) {
      if (perms[0] != 'r') continue;
      for (unsigned long at = start; at < end && !found; at += chunk) {
        size_t want = end - at < chunk + length ? end - at : chunk + length;
        ssize_t got = pread(mem, buffer, want, (off_t)at);
        if (got <= 0) break;
        scanned += (unsigned long)got;
        if (memmem(buffer, (size_t)got, argv[3], length) != NULL) found = 1;
      }
    }
    printf("scanmem: %s after %lu MiB\n", found ? "found" : "not found", scanned >> 20);
    return 0;
  }
  fprintf(stderr, "usage: jail-probe setuid|userns|netns|clone-userns|ptrace PID|mount|mem PID|tiocsti|scanmem PID PATTERN\n");
  return 2;
}
