#include <sys/inotify.h>
static int fd;
static void setup(void)
{
	close(open(path("watched"), O_CREAT | O_WRONLY, 0600));
	fd = inotify_init1(0);
	inotify_add_watch(fd, path("watched"), IN_MODIFY);
}
static int check(void)
{
	char buf[4096];
	int w = open(path("watched"), O_WRONLY);
	CHECK(w >= 0);
	CHECK(write(w, "x", 1) == 1);
	CHECK(read(fd, buf, sizeof(buf)) > 0);
	return 0;
}
