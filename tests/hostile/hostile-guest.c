/*
 * hostile-guest: what a malicious guest does to its virtual hardware, from guest user
 * space as root. Built static by the hostile tests and added to a test image.
 *   ports    read every I/O port 0x0-0xFFFF and write back the value read (iopl 3)
 *   msrs     read MSRs 0x0-0x1FFF, 0x40000000-0x400001FF, 0xC0000000-0xC0011FFF through
 *            /dev/cpu/0/msr and write back each value read
 *   garbage  run 50 pages of random bytes as code, each in a child process
 *   pci      for every PCI device: read its whole config space and write it back, then
 *            map each memory BAR (/sys/bus/pci/devices/D/resourceN, first 64 KiB) and
 *            read and write back every 32-bit word
 *   spin S   spin for S seconds
 * Prints "<mode>: start" first and "<mode>: done …" last, so the host sees how far it got.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void sweep_msrs(int fd, uint32_t first, uint32_t last, unsigned *readable, unsigned *written) {
  for (uint64_t msr = first; msr <= last; msr++) {
    uint64_t value;
    if (pread(fd, &value, sizeof value, (off_t)msr) != sizeof value) continue;
    (*readable)++;
    if (pwrite(fd, &value, sizeof value, (off_t)msr) == sizeof value) (*written)++;
  }
}

/* Config space, then every memory BAR of one device; counts what it touched. */
static void probe_pci_device(const char *name, unsigned *bars, unsigned long *words) {
  char path[256];
  snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/config", name);
  int fd = open(path, O_RDWR);
  if (fd >= 0) {
    unsigned char config[4096];
    ssize_t got = pread(fd, config, sizeof config, 0);
    if (got > 0 && pwrite(fd, config, (size_t)got, 0) < 0) perror(path);
    close(fd);
  }
  for (int bar = 0; bar < 6; bar++) {
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/resource%d", name, bar);
    fd = open(path, O_RDWR | O_SYNC);
    if (fd < 0) continue; /* no such BAR, or an I/O BAR (the port sweep covers those) */
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_size > 0) {
      size_t length = st.st_size < 65536 ? (size_t)st.st_size : 65536;
      volatile uint32_t *bar_map = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (bar_map != MAP_FAILED) {
        (*bars)++;
        for (size_t i = 0; i < length / 4; i++) {
          uint32_t value = bar_map[i];
          bar_map[i] = value;
          (*words)++;
        }
        munmap((void *)bar_map, length);
      }
    }
    close(fd);
  }
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  setvbuf(stdout, NULL, _IONBF, 0);
  printf("%s: start\n", mode);
  if (strcmp(mode, "ports") == 0) {
    if (iopl(3) != 0) { perror("iopl"); return 1; }
    for (unsigned port = 0; port <= 0xffff; port++) {
      unsigned char value = inb((unsigned short)port);
      outb(value, (unsigned short)port);
    }
    printf("ports: done 65536\n");
    return 0;
  }
  if (strcmp(mode, "pci") == 0) {
    DIR *dir = opendir("/sys/bus/pci/devices");
    if (dir == NULL) { perror("/sys/bus/pci/devices"); return 1; }
    unsigned devices = 0, bars = 0;
    unsigned long words = 0;
    for (struct dirent *entry; (entry = readdir(dir)) != NULL;) {
      if (entry->d_name[0] == '.') continue;
      printf("pci: %s\n", entry->d_name);
      probe_pci_device(entry->d_name, &bars, &words);
      devices++;
    }
    closedir(dir);
    printf("pci: done devices=%u bars=%u words=%lu\n", devices, bars, words);
    return 0;
  }
  if (strcmp(mode, "msrs") == 0) {
    int fd = open("/dev/cpu/0/msr", O_RDWR);
    if (fd < 0) { perror("/dev/cpu/0/msr"); return 1; }
    unsigned readable = 0, written = 0;
    sweep_msrs(fd, 0x0, 0x1fff, &readable, &written);
    sweep_msrs(fd, 0x40000000, 0x400001ff, &readable, &written);
    sweep_msrs(fd, 0xc0000000, 0xc0011fff, &readable, &written);
    printf("msrs: done readable=%u written=%u\n", readable, written);
    return 0;
  }
  if (strcmp(mode, "garbage") == 0) {
    unsigned signalled = 0;
    srand((unsigned)time(NULL));
    for (int run = 0; run < 50; run++) {
      pid_t child = fork();
      if (child == 0) {
        unsigned char *code = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        for (int i = 0; i < 4096; i++) code[i] = (unsigned char)rand();
        alarm(2);
        ((void (*)(void))code)();
        _exit(0);
      }
      int status;
      waitpid(child, &status, 0);
      if (WIFSIGNALED(status)) signalled++;
    }
    printf("garbage: done signalled=%u\n", signalled);
    return 0;
  }
  if (strcmp(mode, "spin") == 0 && argc > 2) {
    time_t end = time(NULL) + atoi(argv[2]);
    volatile unsigned long n = 0;
    while (time(NULL) < end) n++;
    printf("spin: done\n");
    return 0;
  }
  fprintf(stderr, "usage: hostile-guest ports|msrs|garbage|pci|spin SECONDS\n");
  return 2;
}
