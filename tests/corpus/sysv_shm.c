#include <sys/ipc.h>
#include <sys/shm.h>
static char *p;
static void setup(void)
{
	int id = shmget(IPC_PRIVATE, 8192, IPC_CREAT | 0600);
	p = shmat(id, NULL, 0);
	strcpy(p, "sysv shared memory");
}
static int check(void)
{
	CHECK(strcmp(p, "sysv shared memory") == 0);
	return 0;
}
