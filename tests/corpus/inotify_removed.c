#include <sys/inotify.h>
static int fd;
static void setup(void)
{
	close(open(path("gone"), O_CREAT | O_WRONLY, 0600));
	fd = inotify_init1(IN_NONBLOCK);
	inotify_add_watch(fd, path("gone"), IN_MODIFY);
	unlink(path("gone"));
	char buf[4096];
	while (read(fd, buf, sizeof(buf)) > 0)
		;
}
static int check(void)
{
	/* The group itself still works: a new watch reports events. */
	close(open(path("new"), O_CREAT | O_WRONLY, 0600));
	CHECK(inotify_add_watch(fd, path("new"), IN_MODIFY) >= 0);
	int w = open(path("new"), O_WRONLY);
	CHECK(write(w, "x", 1) == 1);
	usleep(10000);
	char buf[4096];
	CHECK(read(fd, buf, sizeof(buf)) > 0);
	return 0;
}
