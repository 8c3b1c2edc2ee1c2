#include <sys/ipc.h>
#include <sys/sem.h>
static int id;
static void setup(void)
{
	id = semget(IPC_PRIVATE, 2, IPC_CREAT | 0600);
	struct sembuf up = { 1, 3, 0 };
	semop(id, &up, 1);
}
static int check(void)
{
	CHECK(semctl(id, 1, GETVAL) == 3);
	return 0;
}
