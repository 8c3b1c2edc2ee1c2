#include <sys/ipc.h>
#include <sys/msg.h>
static int id;
struct m { long type; char text[32]; };
static void setup(void)
{
	id = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
	struct m msg = { 7, "queued message" };
	msgsnd(id, &msg, sizeof(msg.text), 0);
}
static int check(void)
{
	struct m got;
	CHECK(msgrcv(id, &got, sizeof(got.text), 7, IPC_NOWAIT) > 0);
	CHECK(strcmp(got.text, "queued message") == 0);
	return 0;
}
