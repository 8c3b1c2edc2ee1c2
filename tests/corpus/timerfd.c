#include <sys/timerfd.h>
static int fd;
static void setup(void)
{
	struct itimerspec t = { .it_interval = { 0, 10000000 }, .it_value = { 0, 10000000 } };
	fd = timerfd_create(CLOCK_MONOTONIC, 0);
	timerfd_settime(fd, 0, &t, NULL);
}
static int check(void)
{
	uint64_t n = 0;
	CHECK(read(fd, &n, sizeof(n)) == sizeof(n));
	CHECK(n >= 1);
	return 0;
}
