/*
 * cns-init-static: PID 1 of a workload that has a root file system of its
 * own (`cns run --rootfs`). The same duty as cns's own init
 * (launcher/src/process/init.rs): reap every child, forward signals to the
 * command, exit with the command's status. It is linked statically so it
 * runs in any root, bind-mounted in as /dev/.cns-init; cns's own binary
 * needs the host's libc, which such a root does not have.
 *
 * argv[1] is the command's PID. The forwarded signals arrive blocked (cns
 * blocks them before the fork) and are taken with sigwaitinfo, so this
 * process holds no fd: nothing more for CRIU to dump.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCHLD};

int main(int argc, char **argv)
{
	sigset_t set;
	pid_t main_pid;
	unsigned i;

	if (argc < 2)
		return 125;
	main_pid = (pid_t)atoi(argv[1]);
	if (main_pid <= 0)
		return 125;
	sigemptyset(&set);
	for (i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
		sigaddset(&set, forwarded[i]);
	sigprocmask(SIG_BLOCK, &set, NULL);
	for (;;) {
		int sig = sigwaitinfo(&set, NULL);
		if (sig < 0)
			continue;
		if (sig != SIGCHLD) {
			kill(main_pid, sig);
			continue;
		}
		for (;;) {
			int status;
			pid_t pid = waitpid(-1, &status, WNOHANG);
			if (pid <= 0)
				break;
			if (pid != main_pid)
				continue;
			if (WIFEXITED(status))
				return WEXITSTATUS(status);
			if (WIFSIGNALED(status))
				return 128 + WTERMSIG(status);
		}
	}
}
