fd = os.open(path("ofd"), os.O_RDWR | os.O_CREAT)
fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
def check():
    g = os.open(path("ofd"), os.O_RDWR)
    try:
        fcntl.fcntl(g, fcntl.F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0)); return "the lock is gone"
    except OSError:
        return True
serve(check)
