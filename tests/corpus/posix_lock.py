f = open(path("plock"), "w"); fcntl.lockf(f, fcntl.LOCK_EX)
def check():
    pid = os.fork()
    if pid == 0:
        g = open(path("plock"), "w")
        try:
            fcntl.lockf(g, fcntl.LOCK_EX | fcntl.LOCK_NB); os._exit(1)
        except OSError:
            os._exit(0)
    return os.waitpid(pid, 0)[1] == 0 or "the lock is gone"
serve(check)
