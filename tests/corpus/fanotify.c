#include <sys/fanotify.h>
static int fd;
static void setup(void)
{
	mkdir(path("fan"), 0700);
	fd = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY);
	fanotify_mark(fd, FAN_MARK_ADD, FAN_MODIFY, AT_FDCWD, path("fan"));
}
static int check(void)
{
	CHECK(fcntl(fd, F_GETFD) >= 0);
	CHECK(fanotify_mark(fd, FAN_MARK_ADD, FAN_MODIFY, AT_FDCWD, path("fan")) == 0);
	return 0;
}
