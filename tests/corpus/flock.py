f = open(path("locked"), "w"); fcntl.flock(f, fcntl.LOCK_EX)
def check():
    g = open(path("locked"), "w")
    try:
        fcntl.flock(g, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return "the lock is gone"
    except BlockingIOError:
        return True
serve(check)
