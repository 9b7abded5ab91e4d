/*
 * The pod sandbox's process (the "pause" container) of the real node: it holds the pod's
 * namespaces and does nothing else. It waits for SIGINT or SIGTERM and exits 0; as PID 1 of a
 * pod that shares its PID namespace it also reaps the orphans given to it (SIGCHLD).
 * Built static with musl (scripts/build-pause), so its image is FROM scratch.
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) {
  (void)sig;
  _exit(0);
}

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction on_stop = {.sa_handler = stop};
  struct sigaction on_child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
  if (sigaction(SIGINT, &on_stop, NULL) < 0 || sigaction(SIGTERM, &on_stop, NULL) < 0 ||
      sigaction(SIGCHLD, &on_child, NULL) < 0) {
    return 1;
  }
  for (;;) {
    pause();
  }
}
