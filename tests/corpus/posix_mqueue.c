#include <mqueue.h>
static mqd_t q;
static void setup(void)
{
	char name[64];
	snprintf(name, sizeof(name), "/cns-corpus-%d", getpid());
	struct mq_attr a = { .mq_maxmsg = 4, .mq_msgsize = 64 };
	q = mq_open(name, O_CREAT | O_RDWR, 0600, &a);
	mq_send(q, "mq message", 11, 1);
}
static int check(void)
{
	char buf[64];
	CHECK(mq_receive(q, buf, sizeof(buf), NULL) == 11);
	CHECK(strcmp(buf, "mq message") == 0);
	return 0;
}
