os.mkfifo(path("fifo")); fd = os.open(path("fifo"), os.O_RDWR)
os.write(fd, b"queued in a fifo")
serve(lambda: os.read(fd, 100) == b"queued in a fifo" or "data lost")
