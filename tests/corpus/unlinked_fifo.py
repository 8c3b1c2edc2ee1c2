os.mkfifo(path("fifo")); fd = os.open(path("fifo"), os.O_RDWR); os.unlink(path("fifo"))
os.write(fd, b"in flight")
serve(lambda: os.read(fd, 100) == b"in flight" or "data lost")
