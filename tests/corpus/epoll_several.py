import select
r, w = os.pipe(); e = os.eventfd(0); ep = select.epoll()
ep.register(r, select.EPOLLIN); ep.register(e, select.EPOLLIN)
os.write(w, b"p"); os.eventfd_write(e, 1)
def check():
    got = {fd for fd, _ in ep.poll(1)}
    return got == {r, e} or "epoll saw %s" % (got,)
serve(check)
