#include <sys/signalfd.h>
static int fd;
static void setup(void)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	sigprocmask(SIG_BLOCK, &s, NULL);
	fd = signalfd(-1, &s, 0);
	kill(getpid(), SIGUSR2); /* pending across the dump */
}
static int check(void)
{
	struct signalfd_siginfo si;
	CHECK(read(fd, &si, sizeof(si)) == sizeof(si));
	CHECK(si.ssi_signo == SIGUSR2);
	return 0;
}
