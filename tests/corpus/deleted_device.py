os.mknod(path("null"), 0o600 | 0o020000, os.makedev(1, 3))
fd = os.open(path("null"), os.O_WRONLY); os.unlink(path("null"))
serve(lambda: os.write(fd, b"x") == 1 or "write failed")
