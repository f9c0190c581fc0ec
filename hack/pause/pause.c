/*
 * pause: the sandbox ("infra") container of a Kubernetes Pod, for hack/images.sh.
 *
 * It holds the Pod's namespaces open and does nothing else: it sleeps until SIGTERM or SIGINT (then exits 0)
 * and, being PID 1 of a shared PID namespace, reaps every orphaned child that is re-parented to it. With -v it
 * prints its version and exits. Built with `gcc -static -Os`, it is the only file of the image.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAUSE_VERSION "3.10-dockyard"

static void on_stop(int sig) {
  /* Only async-signal-safe calls here. */
  static const char msg[] = "pause: stopping\n";
  (void)sig;
  (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
  _exit(0);
}

static void on_child(int sig) {
  int saved = errno;
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
  errno = saved;
}

static int handle(int sig, void (*fn)(int)) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = fn;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = sig == SIGCHLD ? SA_NOCLDSTOP | SA_RESTART : 0;
  return sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "-v") == 0) {
    printf("pause %s\n", PAUSE_VERSION);
    return 0;
  }
  if (argc > 1) {
    fprintf(stderr, "usage: %s [-v]\n", argv[0]);
    return 2;
  }
  if (getpid() != 1) {
    /* Still works (Kubernetes' pause warns the same way): it only reaps its own children then. */
    fprintf(stderr, "pause: warning: not PID 1, orphans are not re-parented to this process\n");
  }
  if (handle(SIGINT, on_stop) < 0 || handle(SIGTERM, on_stop) < 0 || handle(SIGCHLD, on_child) < 0) {
    perror("pause: sigaction");
    return 1;
  }
  for (;;) {
    pause();
  }
  return 42; /* not reached */
}
