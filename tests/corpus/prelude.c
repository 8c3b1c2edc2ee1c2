/* Prelude of every C corpus program (tests/corpus.rs): setup() makes one
 * kernel object in the scratch directory argv[1], "ready" is printed, and
 * after the restore (cns kill NAME USR1) check() runs: 0 prints "check-ok",
 * anything else "check-fail: <line>". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/types.h>

static const char *D;
static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }
static void setup(void);
static int check(void);
#define CHECK(c) do { if (!(c)) return __LINE__; } while (0)

static char *path(const char *name)
{
	static char buf[4096];
	snprintf(buf, sizeof(buf), "%s/%s", D, name);
	return buf;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	D = argv[1];
	signal(SIGUSR1, on_usr1);
	setup();
	printf("ready\n");
	fflush(stdout);
	while (!go)
		usleep(20000);
	int r = check();
	if (r)
		printf("check-fail: line %d (errno %d)\n", r, errno);
	else
		printf("check-ok\n");
	fflush(stdout);
	for (;;)
		pause();
}
