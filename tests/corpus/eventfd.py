fd = os.eventfd(0); os.eventfd_write(fd, 5)
serve(lambda: os.eventfd_read(fd) == 5 or "counter lost")
